package transport

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/granary-rt/granary/grain"
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
	tc := &trackedConn{Conn: c, s: l.s, addr: c.RemoteAddr().String(), bad: newBadBudget(l.s.cfg.MalformedPerSecond)}
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
	bad    *badBudget
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

// badBudget is a token bucket of malformed requests: a connection (or a
// stream, where connections cannot be told apart) may send rate of them
// per second, in bursts of up to a quarter of that. A peer past its budget is slowed
// down: its streams' readers wait for the deficit to be paid back before
// they read the next frame, so HTTP/2 flow control makes the peer wait
// too, and a flood of bad requests costs the server a bounded share of
// its CPU.
type badBudget struct {
	mu     sync.Mutex
	rate   float64 // per second; 0: unlimited
	burst  float64
	tokens float64
	last   time.Time
}

func newBadBudget(rate int) *badBudget {
	burst := max(1, float64(rate)/4)
	return &badBudget{rate: float64(rate), burst: burst, tokens: burst, last: time.Now()}
}

func (b *badBudget) refillLocked(now time.Time) {
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
}

// charge counts n malformed requests.
func (b *badBudget) charge(n int) {
	if b.rate == 0 {
		return
	}
	b.mu.Lock()
	b.refillLocked(time.Now())
	b.tokens -= float64(n)
	b.mu.Unlock()
}

// deficit is how long the peer must wait until it is within its budget.
func (b *badBudget) deficit() time.Duration {
	if b.rate == 0 {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tokens >= 0 {
		return 0
	}
	b.refillLocked(time.Now())
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}

// malformedCode reports whether an error response with code answers a
// request that was malformed (the sender's fault, not the server's). A
// method the server does not have (grain.ErrUnknownMethod) or has with
// another signature (grain.ErrIncompatible) is not: during a rolling
// upgrade, callers built from a newer or older interface send those in
// good faith, and must not be slowed down for it.
func malformedCode(code string) bool {
	switch code {
	case codeBadRequest, codeUnknownType, codeTooLarge, codePermissionDenied:
		return true
	}
	return false
}

var (
	codeBadRequest  = grain.CodeOf(grain.ErrBadRequest)
	codeUnknownType = grain.CodeOf(grain.ErrUnknownGrainType)
	codeTooLarge    = grain.CodeOf(grain.ErrTooLarge)
	// A request refused before it ran because the peer may not send it
	// (a client's reminder tick on a gateway).
	codePermissionDenied = grain.CodeOf(grain.ErrPermissionDenied)
)
