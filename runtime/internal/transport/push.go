package transport

import (
	"context"
	"errors"
	"fmt"

	"github.com/granary-rt/granary/grain"
)

// Pushes: one-way envelopes a server sends down a stream a client opened,
// the other way from requests. The runtime uses them to deliver calls to
// a client's observers over the connection the client already has to its
// gateway.
//
// A Handler finds the stream a request arrived on with StreamOf(ctx) and
// may keep it to Push envelopes to the client later, until Done is
// closed. A Client hands what is pushed to it to ClientConfig.OnPush;
// without one, pushed envelopes are rejected and logged, as any
// unexpected envelope from a server is.
//
// Pushes never take the places of a stream's queue reserved for replies:
// at most MaxPushQueued of them wait to be sent on a stream; Push fails
// with grain.ErrOverloaded beyond that, and with ErrStreamClosed once the
// stream ended. Delivery is at most once: a pushed envelope that Push
// accepted is lost if the stream breaks before the client reads it.

// MaxPushQueued is how many pushed envelopes may wait to be sent on one
// stream.
const MaxPushQueued = 1024

// ErrStreamClosed is what Push returns once its stream has ended (the
// client closed it, disconnected or died). It wraps
// grain.ErrSiloUnavailable.
var ErrStreamClosed = fmt.Errorf("transport: stream closed: %w", grain.ErrSiloUnavailable)

type streamKey struct{}

// Stream is the server's end of the stream a request arrived on, as a
// Handler sees it.
type Stream struct{ ss *serverStream }

// StreamOf returns the stream the request whose ctx a Handler was given
// arrived on, nil for another ctx: the same *Stream for every request of
// one stream, so that it can key a map.
func StreamOf(ctx context.Context) *Stream {
	s, _ := ctx.Value(streamKey{}).(*Stream)
	return s
}

// AfterDone arranges for f to run in its own goroutine once the stream
// has ended, as context.AfterFunc does.
func (s *Stream) AfterDone(f func()) { context.AfterFunc(s.ss.ctx, f) }

// Peer returns the remote address of the stream's connection.
func (s *Stream) Peer() string { return s.ss.peer }

// Done is closed when the stream has ended.
func (s *Stream) Done() <-chan struct{} { return s.ss.ctx.Done() }

// Push queues env to be sent to the client as a one-way envelope
// (KindOneWay; Push sets Kind and ID) and returns; it takes ownership of
// env and never blocks. It fails with an error wrapping grain.ErrTooLarge
// or grain.ErrBadRequest if env is over the limits or malformed, one
// wrapping grain.ErrOverloaded if MaxPushQueued pushes already wait on
// the stream, and ErrStreamClosed once the stream has ended.
func (s *Stream) Push(env *Envelope) error {
	ss := s.ss
	env.Kind = KindOneWay
	env.ID = 0
	if err := checkEnvelope(env, &ss.srv.cfg.Limits); err != nil {
		return fmt.Errorf("transport: push %s method %s to %s: %w", env.Target, env.Method, ss.peer, err)
	}
	if ss.ctx.Err() != nil || ss.draining.Load() {
		return ErrStreamClosed
	}
	select {
	case <-ss.w.done:
		return ErrStreamClosed
	case <-ss.failed:
		return ErrStreamClosed
	default:
	}
	if ss.pushed.Add(1) > MaxPushQueued {
		ss.pushed.Add(-1)
		return fmt.Errorf("transport: push to %s: %d envelopes wait to be sent: %w", ss.peer, MaxPushQueued, grain.ErrOverloaded)
	}
	if !ss.w.offer(env) {
		// Cannot happen while the counts hold (the queue has places for
		// MaxPushQueued pushes); refuse rather than block.
		ss.pushed.Add(-1)
		return fmt.Errorf("transport: push to %s: stream queue full: %w", ss.peer, grain.ErrOverloaded)
	}
	return nil
}

// errNoPushHandler rejects a pushed envelope at a Client without OnPush.
var errNoPushHandler = errors.New("transport: unexpected envelope from server")
