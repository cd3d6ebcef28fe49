package transport

import (
	"context"
	"sync"
	"time"
)

// requestCtx is the context a handler gets for one request: the stream's
// context (values, cancellation when the stream dies) bounded by the
// request's deadline, if it has one, and cancelled when the client sends a
// cancellation for the request.
//
// context.WithTimeout would arm a timer for every request, and most
// requests finish long before their deadline without anyone waiting on
// Done. requestCtx arms one only when Done is first asked for; until then
// Err compares the clock with the deadline. finish, called when the reply
// is queued, cancels it.
type requestCtx struct {
	context.Context           // the stream's context
	deadline        time.Time // zero: none
	// server: a server's request context, which the peer can cancel
	// (Client.Call must wait on its Done, not only on its parent's).
	server bool

	mu       sync.Mutex
	done     chan struct{} // made by the first Done
	err      error
	timer    *time.Timer
	stopPar  func() bool // stops the parent's AfterFunc
	children map[*afterFunc]struct{}
}

// afterFunc is a callback registered with requestCtx.AfterFunc.
type afterFunc struct {
	f    func()
	once sync.Once
}

// WithTimeout is context.WithTimeout for contexts that are mostly handed
// to Client.Call: no timer is armed unless something asks for Done, since
// Call enforces the deadline itself. Call release when the work is done.
func WithTimeout(parent context.Context, timeout time.Duration) (ctx context.Context, release func()) {
	c := newRequestCtx(parent, timeout)
	if dl, ok := parent.Deadline(); ok && dl.Before(c.deadline) {
		c.deadline = dl
	}
	return c, c.finish
}

func newRequestCtx(parent context.Context, timeout time.Duration) *requestCtx {
	return &requestCtx{Context: parent, deadline: time.Now().Add(timeout)}
}

func (c *requestCtx) Deadline() (time.Time, bool) { return c.deadline, !c.deadline.IsZero() }

// Err reports why the context ended, if it did: cancelled (the request was
// answered or the stream died) or its deadline passed.
func (c *requestCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		if err := c.Context.Err(); err != nil {
			c.endLocked(err)
		} else if !c.deadline.IsZero() && !time.Now().Before(c.deadline) {
			c.endLocked(context.DeadlineExceeded)
		}
	}
	return c.err
}

// Done arms the deadline timer and the parent's cancellation on first use.
func (c *requestCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		return c.done
	}
	c.done = make(chan struct{})
	if c.err != nil {
		close(c.done)
		return c.done
	}
	if err := c.Context.Err(); err != nil {
		c.endLocked(err)
		return c.done
	}
	if !c.deadline.IsZero() {
		left := time.Until(c.deadline)
		if left <= 0 {
			c.endLocked(context.DeadlineExceeded)
			return c.done
		}
		c.timer = time.AfterFunc(left, func() { c.end(context.DeadlineExceeded) })
	}
	if c.Context.Done() != nil { // a parent that can be cancelled
		c.stopPar = context.AfterFunc(c.Context, func() { c.end(c.Context.Err()) })
	}
	return c.done
}

// AfterFunc lets context.WithCancel and friends derive from a requestCtx
// without a goroutine per child (the context package looks for it).
func (c *requestCtx) AfterFunc(f func()) (stop func() bool) {
	a := &afterFunc{f: f}
	c.Done() // arm: the callback must run when the deadline passes
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		a.once.Do(func() { go f() })
		return func() bool { return false }
	}
	if c.children == nil {
		c.children = make(map[*afterFunc]struct{})
	}
	c.children[a] = struct{}{}
	c.mu.Unlock()
	return func() bool {
		stopped := false
		a.once.Do(func() { stopped = true })
		if stopped {
			c.mu.Lock()
			delete(c.children, a)
			c.mu.Unlock()
		}
		return stopped
	}
}

// finish cancels the context once the request is answered.
func (c *requestCtx) finish() { c.end(context.Canceled) }

// cancel cancels the context: the client gave up on the request.
func (c *requestCtx) cancel() { c.end(context.Canceled) }

func (c *requestCtx) end(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.endLocked(err)
	}
}

func (c *requestCtx) endLocked(err error) {
	c.err = err
	if c.done != nil {
		close(c.done)
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.stopPar != nil {
		c.stopPar()
	}
	for a := range c.children {
		a.once.Do(func() { go a.f() })
	}
	c.children = nil
}

// Value answers for the stream's context; requestCtx adds no values. It
// hides the context package's own lookup key: answering it with the
// stream's cancelCtx would make context.Cause report the stream's cause,
// not this context's.
func (c *requestCtx) Value(key any) any {
	if key == cancelCtxKey {
		return nil
	}
	return c.Context.Value(key)
}

// cancelCtxKey is the key the context package looks its cancelCtx up by,
// learnt once by watching what context.Cause asks a context for.
var cancelCtxKey = func() any {
	p := &keyProbe{Context: context.Background()}
	_ = context.Cause(p)
	return p.key
}()

// keyProbe records the first key its Value is asked for.
type keyProbe struct {
	context.Context
	key any
}

func (p *keyProbe) Value(key any) any {
	if p.key == nil {
		p.key = key
	}
	return nil
}

// String names the context in debug output.
func (c *requestCtx) String() string { return "transport.requestCtx" }
