package transport

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// trackingListener records the connections a Server accepts, so that the
// server can count requests per connection and close the connection of a
// peer that does not read its replies.
type trackingListener struct {
	net.Listener
	s *Server
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, s: l.s, addr: c.RemoteAddr().String()}
	l.s.connMu.Lock()
	l.s.conns[tc.addr] = append(l.s.conns[tc.addr], tc)
	l.s.connMu.Unlock()
	return tc, nil
}

// trackedConn is an accepted connection.
type trackedConn struct {
	net.Conn
	s      *Server
	addr   string
	closed sync.Once
	// unsent counts the requests received on the connection's streams
	// whose reply has not been sent.
	unsent atomic.Int64
}

func (c *trackedConn) Close() error {
	c.closed.Do(func() {
		c.s.connMu.Lock()
		defer c.s.connMu.Unlock()
		list := c.s.conns[c.addr]
		for i, o := range list {
			if o == c {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(c.s.conns, c.addr)
		} else {
			c.s.conns[c.addr] = list
		}
	})
	return c.Conn.Close()
}

// connOf returns the connection a stream from addr arrived on, or nil if
// addr does not tell one connection (listeners whose connections all have
// the same remote address, like in-memory pipes).
func (s *Server) connOf(addr string) *trackedConn {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if list := s.conns[addr]; len(list) == 1 {
		return list[0]
	}
	return nil
}

// maxLogHosts bounds the hosts a logLimiter remembers; past it, it forgets
// them all (and logs once more for each).
const maxLogHosts = 4096

// logLimiter lets through at most one warning per peer host per interval,
// so that a peer flooding a server with bad input cannot make it burn its
// CPU on logging. Hosts, not addresses: a peer can open many connections.
type logLimiter struct {
	every time.Duration
	mu    sync.Mutex
	last  map[string]time.Time
}

func (l *logLimiter) init(every time.Duration) {
	l.every = every
	l.last = make(map[string]time.Time)
}

// allow reports whether a warning about the peer at addr may be logged now.
func (l *logLimiter) allow(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.last[host]; ok && now.Sub(t) < l.every {
		return false
	}
	if len(l.last) >= maxLogHosts {
		clear(l.last)
	}
	l.last[host] = now
	return true
}
