package runtime

import (
	"cmp"
	"time"

	"github.com/granary-rt/granary/runtime/internal/transport"
)

// TransportConfig tunes a silo's listeners (the silo listener and the
// gateway): what one peer may send and how much of the silo it may hold.
// Zero fields take the defaults given. See the README's "Limits and
// bounds" for what happens at each bound.
type TransportConfig struct {
	// MaxFrameSize is the largest gRPC message a peer may send. A frame
	// over it ends the stream (ResourceExhausted). Default 16 MiB, or
	// enough for one message of Config.MaxMessageSize and its header if
	// that is more. (The largest argument or result of a call is
	// Config.MaxMessageSize.)
	MaxFrameSize int
	// MaxHeaderSize is the largest encoded call without its body (target,
	// call chain, request context, error message). Default 64 KiB.
	MaxHeaderSize int
	// MaxEnvelopesPerFrame is the most calls one frame may carry. Default
	// 1024.
	MaxEnvelopesPerFrame int
	// MaxInflightPerStream caps the requests of one stream whose reply has
	// not been sent; a request beyond it is answered at once with
	// grain.ErrOverloaded. Default 4096.
	MaxInflightPerStream int
	// MaxInflightPerConnection is the same cap over all the streams of one
	// connection. Default 8192.
	MaxInflightPerConnection int
	// MaxStreamsPerConnection caps the concurrent streams a peer may open
	// on one connection. Default 16.
	MaxStreamsPerConnection int
	// QueueSize is how many replies a stream's writer holds beyond
	// MaxInflightPerStream, for the answers to requests refused at once.
	// The replies of admitted requests always find room: a turn never
	// waits for the network. Default 1024.
	QueueSize int
	// SendStallTimeout is how long a peer may leave its replies unread
	// before the silo closes its connection. Default 10 s.
	SendStallTimeout time.Duration
	// MalformedPerSecond is how many malformed requests a connection may
	// send per second (bursts of a quarter of that) before the silo slows
	// it down. Default 1000; -1: no limit.
	MalformedPerSecond int
	// MaxRequestTimeout caps the timeout a remote caller may ask for; it
	// is at most (and by default) Config.ResponseTimeout.
	MaxRequestTimeout time.Duration
	// KeepaliveTime is how long a connection may be idle before the silo
	// pings the peer, KeepaliveTimeout how long it waits for the answer
	// before closing the connection. Defaults 10 s and 5 s.
	KeepaliveTime, KeepaliveTimeout time.Duration
}

// limits are the transport limits of c for messages (bodies) of up to
// maxMessage bytes: unless c sets MaxFrameSize, a frame holds at least one
// message of that size with its header.
func (c TransportConfig) limits(maxMessage int) transport.Limits {
	l := transport.Limits{MaxFrameSize: c.MaxFrameSize, MaxBodySize: maxMessage,
		MaxHeaderSize: c.MaxHeaderSize, MaxEnvelopesPerFrame: c.MaxEnvelopesPerFrame}
	if l.MaxFrameSize == 0 {
		l.MaxFrameSize = max(transport.DefaultMaxFrameSize,
			maxMessage+cmp.Or(l.MaxHeaderSize, transport.DefaultMaxHeaderSize)+transport.FrameOverhead)
	}
	return l
}

// serverConfig is the transport server configuration of c, for messages
// of up to maxMessage bytes.
func (c TransportConfig) serverConfig(maxMessage int) transport.ServerConfig {
	return transport.ServerConfig{
		Limits:                   c.limits(maxMessage),
		MaxInflightPerStream:     c.MaxInflightPerStream,
		MaxInflightPerConnection: c.MaxInflightPerConnection,
		MaxStreamsPerConnection:  c.MaxStreamsPerConnection,
		QueueSize:                c.QueueSize,
		SendStallTimeout:         c.SendStallTimeout,
		MalformedPerSecond:       c.MalformedPerSecond,
		MaxRequestTimeout:        c.MaxRequestTimeout,
		KeepaliveTime:            c.KeepaliveTime,
		KeepaliveTimeout:         c.KeepaliveTimeout,
	}
}
