package transport

import (
	"fmt"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
)

// Defaults for Limits, ServerConfig and ClientConfig.
const (
	DefaultMaxFrameSize         = 16 << 20
	DefaultMaxBodySize          = 4 << 20
	DefaultMaxHeaderSize        = 64 << 10
	DefaultMaxEnvelopesPerFrame = 1024
	DefaultQueueSize            = 1024
	DefaultMaxInflightPerStream = 4096
	DefaultMaxInflightPerConn   = 8192
	DefaultMaxStreamsPerConn    = 16
	DefaultSendStallTimeout     = 10 * time.Second
	DefaultMalformedPerSecond   = 1000
	DefaultDialTimeout          = 5 * time.Second
	DefaultKeepaliveTime        = 10 * time.Second
	DefaultKeepaliveTimeout     = 5 * time.Second
)

// FrameOverhead is the most bytes a frame holding one envelope takes
// beyond the envelope's body and header: MaxFrameSize must be at least
// MaxBodySize + MaxHeaderSize + FrameOverhead.
const FrameOverhead = frameOverhead

// Limits bound what a peer may send. Both ends of a connection should use
// the same limits: a sender checks its own, a receiver enforces its own.
// Zero fields take the defaults.
type Limits struct {
	// MaxFrameSize is the largest frame (gRPC message) in bytes, sent or
	// received. Default 16 MiB. A received frame over the limit ends the
	// stream with codes.ResourceExhausted.
	MaxFrameSize int
	// MaxBodySize is the largest envelope body in bytes. Default 4 MiB. A
	// request over it fails on the sending side with grain.ErrTooLarge; one
	// received over it is answered with grain.ErrTooLarge.
	MaxBodySize int
	// MaxHeaderSize is the largest encoded envelope without its body (target,
	// chain, context, error message, ...). Default 64 KiB.
	MaxHeaderSize int
	// MaxEnvelopesPerFrame is the most envelopes one frame may carry.
	// Default 1024.
	MaxEnvelopesPerFrame int
}

func (l *Limits) validate(pkg string) error {
	if l.MaxFrameSize == 0 {
		l.MaxFrameSize = DefaultMaxFrameSize
	}
	if l.MaxBodySize == 0 {
		l.MaxBodySize = min(DefaultMaxBodySize, l.MaxFrameSize/4)
	}
	if l.MaxHeaderSize == 0 {
		l.MaxHeaderSize = min(DefaultMaxHeaderSize, l.MaxFrameSize/4)
	}
	if l.MaxEnvelopesPerFrame == 0 {
		l.MaxEnvelopesPerFrame = DefaultMaxEnvelopesPerFrame
	}
	switch {
	case l.MaxBodySize < 0 || l.MaxHeaderSize < 0 || l.MaxEnvelopesPerFrame < 0:
		return fmt.Errorf("transport: %s.Limits: negative limit %+v", pkg, *l)
	case l.MaxHeaderSize < 256:
		return fmt.Errorf("transport: %s.Limits.MaxHeaderSize %d is below 256 bytes", pkg, l.MaxHeaderSize)
	case l.MaxFrameSize < l.MaxBodySize+l.MaxHeaderSize+frameOverhead:
		return fmt.Errorf("transport: %s.Limits.MaxFrameSize %d cannot hold one envelope of MaxBodySize %d and MaxHeaderSize %d (+%d bytes of framing)",
			pkg, l.MaxFrameSize, l.MaxBodySize, l.MaxHeaderSize, frameOverhead)
	}
	return nil
}

// ServerConfig configures a Server. The zero value works.
type ServerConfig struct {
	Limits
	// MaxInflightPerStream caps the requests of one stream that have not
	// been answered yet (their reply not sent); a request beyond it is
	// answered at once with grain.ErrOverloaded, not queued. Default 4096.
	MaxInflightPerStream int
	// MaxInflightPerConnection is the same cap over all the streams of one
	// connection. Default 8192. (It is not enforced for listeners whose
	// connections all report the same remote address, such as in-memory
	// pipes; MaxInflightPerStream still is.)
	MaxInflightPerConnection int
	// MaxStreamsPerConnection caps the concurrent streams a client may
	// open on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS); our
	// Client opens one. Default 16.
	MaxStreamsPerConnection int
	// QueueSize is how many replies a stream's writer holds beyond
	// MaxInflightPerStream, for the answers to requests rejected at once
	// (overloaded, malformed, server stopping). While that many envelopes
	// wait to be sent, the stream's reader waits for room rather than
	// reject more (the peer's sends wait with it). The replies of admitted
	// requests never wait: they always find room (a reply that did not
	// would fail the stream). Default 1024.
	QueueSize int
	// SendStallTimeout is how long a stream's writer may make no progress
	// while replies wait (the peer does not read them: HTTP/2 flow control
	// stops the writer) before the server closes the peer's connection,
	// ending the stream with codes.ResourceExhausted. Default 10 s.
	SendStallTimeout time.Duration
	// MalformedPerSecond is how many malformed requests (and frames) a
	// connection may send per second, in bursts of a quarter of that, before the
	// server slows it down: its streams' readers then wait for the excess
	// to be paid back before reading on. Malformed: not decodable, over a
	// limit, or answered, before running, with grain.ErrBadRequest,
	// ErrUnknownGrainType, ErrTooLarge or ErrPermissionDenied (not
	// ErrUnknownMethod or ErrIncompatible, which callers of another
	// version of an interface get in good faith). Default 1000; -1: no
	// limit.
	MalformedPerSecond int
	// MaxRequestTimeout caps the timeout a request may ask for; a request
	// without one gets it. 0: no cap. Silos set it to their
	// ResponseTimeout.
	MaxRequestTimeout time.Duration
	// KeepaliveTime is how long a connection is idle before the server
	// pings the client to see if it is alive; KeepaliveTimeout how long it
	// waits for the ack before closing the connection. Defaults 10 s and
	// 5 s; the minimum time is 1 s. The server accepts client pings as
	// often as every second.
	KeepaliveTime    time.Duration
	KeepaliveTimeout time.Duration
	// MaxConnectionIdle closes (with GOAWAY) a connection that has had no
	// open stream for this long: one whose stream was refused, or that
	// never opened one. 0: never.
	MaxConnectionIdle time.Duration
	// Credentials secure the server's connections, for example TLS
	// credentials whose peers' certificates a Handler finds with
	// PeerTLS. Default nil: plaintext.
	Credentials credentials.TransportCredentials
	// Logger receives the transport's logs. Default: no logs.
	Logger *zap.Logger
	// GRPCOptions are appended to the transport's own gRPC server options.
	GRPCOptions []grpc.ServerOption
}

func (c *ServerConfig) validate() error {
	if err := c.Limits.validate("ServerConfig"); err != nil {
		return err
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.QueueSize < 0 {
		return fmt.Errorf("transport: ServerConfig.QueueSize %d is negative", c.QueueSize)
	}
	if c.MaxInflightPerStream == 0 {
		c.MaxInflightPerStream = DefaultMaxInflightPerStream
	}
	if c.MaxInflightPerConnection == 0 {
		c.MaxInflightPerConnection = DefaultMaxInflightPerConn
	}
	if c.MaxStreamsPerConnection == 0 {
		c.MaxStreamsPerConnection = DefaultMaxStreamsPerConn
	}
	if c.SendStallTimeout == 0 {
		c.SendStallTimeout = DefaultSendStallTimeout
	}
	switch {
	case c.MalformedPerSecond == 0:
		c.MalformedPerSecond = DefaultMalformedPerSecond
	case c.MalformedPerSecond == -1:
		c.MalformedPerSecond = 0 // badBudget: unlimited
	case c.MalformedPerSecond < 0:
		return fmt.Errorf("transport: ServerConfig.MalformedPerSecond %d is negative (-1 means no limit)", c.MalformedPerSecond)
	}
	if c.MaxInflightPerStream < 0 || c.MaxInflightPerConnection < 0 || c.MaxStreamsPerConnection < 0 || c.MaxRequestTimeout < 0 || c.SendStallTimeout < 0 {
		return fmt.Errorf("transport: ServerConfig: negative MaxInflightPerStream %d, MaxInflightPerConnection %d, MaxStreamsPerConnection %d, MaxRequestTimeout %v or SendStallTimeout %v",
			c.MaxInflightPerStream, c.MaxInflightPerConnection, c.MaxStreamsPerConnection, c.MaxRequestTimeout, c.SendStallTimeout)
	}
	if err := validateKeepalive("ServerConfig", &c.KeepaliveTime, &c.KeepaliveTimeout, time.Second); err != nil {
		return err
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return nil
}

func (c *ServerConfig) keepalive() (keepalive.ServerParameters, keepalive.EnforcementPolicy) {
	return keepalive.ServerParameters{Time: c.KeepaliveTime, Timeout: c.KeepaliveTimeout, MaxConnectionIdle: c.MaxConnectionIdle},
		keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true}
}

// ClientConfig configures a Client. The zero value works.
type ClientConfig struct {
	Limits
	// QueueSize is how many envelopes a stream's writer queues. When it is
	// full, Call waits for room (until its ctx ends) and Send fails at once
	// with grain.ErrOverloaded. Default 1024.
	QueueSize int
	// DialTimeout bounds connecting to a peer and opening the stream.
	// Default 5 s.
	DialTimeout time.Duration
	// KeepaliveTime is how often the client pings a peer whose connection
	// is idle; KeepaliveTimeout how long it waits for the ack before it
	// declares the peer dead and fails the calls in flight. Defaults 10 s
	// and 5 s; gRPC does not ping more often than every 10 s.
	KeepaliveTime    time.Duration
	KeepaliveTimeout time.Duration
	// Credentials secure the client's connections, for example TLS
	// credentials. Default nil: plaintext.
	Credentials credentials.TransportCredentials
	// Logger receives the transport's logs. Default: no logs.
	Logger *zap.Logger
	// DialOptions are appended to the transport's own dial options, e.g.
	// grpc.WithContextDialer.
	DialOptions []grpc.DialOption
	// OnPush, if set, receives the one-way envelopes servers push down
	// the client's streams (see Stream.Push), with the address of the
	// stream's server. It is called on the stream's reader goroutine, in
	// arrival order: it must not block for long (queue and return) and
	// must not panic. Nil: pushed envelopes are rejected and logged.
	OnPush func(addr string, env *Envelope)
}

func (c *ClientConfig) validate() error {
	if err := c.Limits.validate("ClientConfig"); err != nil {
		return err
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.QueueSize < 0 {
		return fmt.Errorf("transport: ClientConfig.QueueSize %d is negative", c.QueueSize)
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.DialTimeout < 0 {
		return fmt.Errorf("transport: ClientConfig.DialTimeout %v is negative", c.DialTimeout)
	}
	if err := validateKeepalive("ClientConfig", &c.KeepaliveTime, &c.KeepaliveTimeout, 10*time.Second); err != nil {
		return err
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return nil
}

func validateKeepalive(pkg string, t, timeout *time.Duration, minTime time.Duration) error {
	if *t == 0 {
		*t = DefaultKeepaliveTime
	}
	if *timeout == 0 {
		*timeout = DefaultKeepaliveTimeout
	}
	switch {
	case *t < 0 || *timeout < 0:
		return fmt.Errorf("transport: %s: negative keepalive time %v or timeout %v", pkg, *t, *timeout)
	case *t < minTime:
		*t = minTime
	}
	return nil
}
