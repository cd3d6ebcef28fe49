package transport

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"

	"google.golang.org/grpc/mem"
)

// errWriterClosed is what enqueue returns once the writer has stopped.
var errWriterClosed = errors.New("transport: stream writer stopped")

// writer is the one goroutine that sends on a stream. It takes envelopes
// from a bounded queue and sends each batch as one frame: when it is idle,
// the first envelope goes out at once, alone; while a frame is being
// written, the envelopes queued meanwhile pile up and go out together in the
// next frame. There is no artificial delay.
type writer struct {
	ch    chan *Envelope
	flush chan struct{} // closed by the owner: send what is queued, then stop
	done  chan struct{} // closed when run returns; err is set before
	err   error

	lim   *Limits
	send  func(any) error // the stream's SendMsg
	stats *counters
	sent  func(n int) // if set, told how many envelopes each frame carried

	carry *Envelope // taken from ch but did not fit the last frame
	batch []*Envelope
	out   outFrame
}

func newWriter(lim *Limits, queue int, send func(any) error, stats *counters) *writer {
	return &writer{
		ch:    make(chan *Envelope, queue),
		flush: make(chan struct{}),
		done:  make(chan struct{}),
		lim:   lim,
		send:  send,
		stats: stats,
	}
}

// enqueue queues e, a checked envelope, blocking while the queue is full
// until ctx ends or the writer stops.
func (w *writer) enqueue(ctx context.Context, e *Envelope) error {
	select {
	case w.ch <- e:
		return nil
	default:
	}
	select {
	case w.ch <- e:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-w.done:
		return errWriterClosed
	}
}

// offer queues e, a checked envelope, if the queue has room, without
// blocking. It reports false if the queue is full.
func (w *writer) offer(e *Envelope) bool {
	select {
	case w.ch <- e:
		return true
	default:
		return false
	}
}

// run sends frames until ctx ends, a send fails, or flush is closed and the
// queue is empty. It returns nil only in the last case.
func (w *writer) run(ctx context.Context) (err error) {
	defer func() {
		w.err = err
		close(w.done)
	}()
	for {
		e := w.carry
		w.carry = nil
		if e == nil {
			select {
			case e = <-w.ch:
			case <-w.flush:
				return w.drain()
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := w.write(e); err != nil {
			return err
		}
	}
}

// drain sends everything queued, then returns.
func (w *writer) drain() error {
	for {
		e := w.carry
		w.carry = nil
		if e == nil {
			select {
			case e = <-w.ch:
			default:
				return nil
			}
		}
		if err := w.write(e); err != nil {
			return err
		}
	}
}

// write sends first and whatever else is queued and fits in one frame.
func (w *writer) write(first *Envelope) error {
	if len(w.ch) == 0 {
		// Let the goroutines that are runnable now (callers about to
		// enqueue) run first. When nothing else is runnable this returns at
		// once; under load it turns a stream of single envelopes into
		// batches.
		runtime.Gosched()
	}
	batch := append(w.batch[:0], first)
	total := first.size
fill:
	for len(batch) < w.lim.MaxEnvelopesPerFrame {
		select {
		case e := <-w.ch:
			if total+e.size+frameOverhead > w.lim.MaxFrameSize {
				w.carry = e
				break fill
			}
			batch = append(batch, e)
			total += e.size
		default:
			break fill
		}
	}
	n, cancels := frameSize(batch, total)
	buf := mem.DefaultBufferPool().Get(n)
	b := appendFrame((*buf)[:0], batch)
	*buf = b
	envs := len(batch)
	clear(batch)
	w.batch = batch[:0]
	if len(b) != n {
		// A bug in encodedSize; never send a frame we cannot vouch for.
		return fmt.Errorf("transport: encoded frame is %d bytes, computed %d", len(b), n)
	}
	w.out.buf = buf
	if err := w.send(&w.out); err != nil {
		return err
	}
	w.stats.framesSent.Add(1)
	w.stats.envelopesSent.Add(uint64(envs - cancels)) // a cancellation is no envelope on the wire
	if w.sent != nil {
		w.sent(envs)
	}
	return nil
}

// counters are a Server's or Client's statistics.
type counters struct {
	framesSent        atomic.Uint64
	envelopesSent     atomic.Uint64
	framesReceived    atomic.Uint64
	envelopesReceived atomic.Uint64
	rejected          atomic.Uint64
	overloaded        atomic.Uint64
	cancelsSent       atomic.Uint64
	cancelsReceived   atomic.Uint64
	cancelled         atomic.Uint64
}

// Stats are cumulative counts of a Server's or Client's traffic, over all
// its streams. EnvelopesSent/FramesSent is the average batch size.
type Stats struct {
	FramesSent        uint64
	EnvelopesSent     uint64
	FramesReceived    uint64
	EnvelopesReceived uint64
	// EnvelopesRejected counts received envelopes that were malformed or
	// over a limit.
	EnvelopesRejected uint64
	// RequestsOverloaded counts requests a Server answered with
	// grain.ErrOverloaded because their stream or connection had too many
	// requests in flight.
	RequestsOverloaded uint64
	// CancelsSent counts the cancellations a Client sent (a caller's
	// context was cancelled while its call waited); CancelsReceived those
	// a Server received, and RequestsCancelled those of them that found
	// their request in flight and cancelled its context. The others were
	// for requests already answered, or unknown: they are ignored.
	CancelsSent, CancelsReceived, RequestsCancelled uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		FramesSent:         c.framesSent.Load(),
		EnvelopesSent:      c.envelopesSent.Load(),
		FramesReceived:     c.framesReceived.Load(),
		EnvelopesReceived:  c.envelopesReceived.Load(),
		EnvelopesRejected:  c.rejected.Load(),
		RequestsOverloaded: c.overloaded.Load(),
		CancelsSent:        c.cancelsSent.Load(),
		CancelsReceived:    c.cancelsReceived.Load(),
		RequestsCancelled:  c.cancelled.Load(),
	}
}
