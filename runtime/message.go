package runtime

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/internal/transport"
)

// message is one call on its way to, or inside, an activation.
type message struct {
	ctx    context.Context
	target grain.ID
	typ    *grainType
	method *grain.MethodDesc
	args   any

	// Set by complete, read by the caller after receiving from done.
	reply any
	err   error
	done  chan struct{} // buffered(1); nil for one-way and remote calls
	// replyFn answers a call that came from another process; nil for
	// local calls and remote one-way calls.
	replyFn transport.Replier
	// chain is the call chain: the turns that wait for this call, the
	// innermost last (see turn.go). Nil for calls from clients and one-way
	// calls.
	chain []link
	// hops is how often the call was forwarded between processes; 0 for
	// a call from a client that did not know the host.
	hops uint8
	// oneWayFailed, set on one-way calls, gets the error of a one-way call
	// that could not be delivered here (not hosted, stopping): nobody
	// waits for it, so the silo routes it on itself.
	oneWayFailed func(*message, error)

	// abandoned is set by a caller that stopped waiting (deadline,
	// cancellation); its message is skipped if it has not started.
	abandoned atomic.Bool
	// forwards counts how often the message was re-routed, to bound loops.
	forwards int
	// next links the message into a mailbox queue.
	next *message

	// sys, when set, makes this a system turn (a timer callback, a
	// write-behind flush) with no method, caller or reply.
	sys func(ctx context.Context)
	// idle says the turn does not count as activity for idle collection.
	idle bool

	// tn is the message's turn, when it is not pooled (see
	// activation.turn).
	tn turn
}

var messagePool = sync.Pool{New: func() any {
	return &message{done: make(chan struct{}, 1)}
}}

func newMessage(ctx context.Context, id grain.ID, t *grainType, m *grain.MethodDesc, args any) *message {
	msg := messagePool.Get().(*message)
	msg.ctx, msg.target, msg.typ, msg.method, msg.args = ctx, id, t, m, args
	return msg
}

// release returns a message whose reply was consumed to the pool. Abandoned
// messages are never released: the activation may still complete them.
func (m *message) release() {
	done := m.done
	*m = message{done: done}
	messagePool.Put(m)
}

// complete delivers the outcome to the caller. It is called exactly once per
// message.
func (m *message) complete(reply any, err error) {
	if m.replyFn != nil {
		m.replyFn.Reply(encodeResponse(reply, err))
		return
	}
	if m.done == nil && err != nil && m.oneWayFailed != nil {
		if _, notHere := redirectOf(err); notHere {
			m.oneWayFailed(m, err)
			return
		}
	}
	m.reply, m.err = reply, err
	if m.done != nil {
		m.done <- struct{}{}
	}
}

// queue is a FIFO of messages, linked through message.next, so that a
// mailbox costs three words and never allocates. A message is in at most one
// queue at a time.
type queue struct {
	head, tail *message
	size       int
}

func (q *queue) len() int { return q.size }

func (q *queue) push(m *message) {
	m.next = nil
	if q.tail == nil {
		q.head = m
	} else {
		q.tail.next = m
	}
	q.tail = m
	q.size++
}

func (q *queue) pop() *message {
	m := q.head
	if m == nil {
		return nil
	}
	q.head, m.next = m.next, nil
	if q.head == nil {
		q.tail = nil
	}
	q.size--
	return m
}

// drain removes and returns every message, in order.
func (q *queue) drain() []*message {
	out := make([]*message, 0, q.size)
	for m := q.pop(); m != nil; m = q.pop() {
		out = append(out, m)
	}
	return out
}
