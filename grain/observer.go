package grain

import (
	"context"
	"fmt"
)

// Observers: objects outside the grain model (a client's, or one a grain
// made on its silo) that grains call back. An observer interface is marked
// for the generator like a grain interface, and all its methods return only
// an error:
//
//	//granary:observer
//	type ChatObserver interface {
//		Receive(ctx context.Context, from, text string) error
//	}
//
// granary-gen writes ChatObserverType, the typed reference ChatObserverRef
// and NewChatObserverRef, which makes a local object callable through an
// ObserverHost (a runtime.Client, a grain's Context) and returns its
// reference and the ObserverHandle that deletes it. The reference is a
// plain value (it encodes with msgpack) that can be passed to a grain as
// an argument or kept in its state; a grain calls it through its Context:
//
//	err := ref.Bind(c).Receive(ctx, "bob", "hi")
//
// Observer calls are one-way: see ObserverCaller for what a nil error
// means. ObserverSet keeps a grain's subscribers.

// ErrObserverGone: the observer a call was made to no longer exists: it
// was deleted, the client that made it disconnected from the gateway that
// delivers its calls (or died), or the silo that held it left the
// cluster. It never comes back: make a new one (and subscribe again).
// ObserverSet drops a subscriber whose notification fails with it. Did not
// run.
var ErrObserverGone = NewError("observer_gone", "grain: observer gone")

// ObserverRef is the untyped core of a generated observer reference: which
// observer interface, which silo delivers its calls, and the observer's
// key on that silo (random and unguessable: holding a reference is what
// lets a grain call the observer). The fields are exported so that a
// reference encodes with msgpack as a grain argument or state field;
// treat them as opaque.
type ObserverRef struct {
	// Type is the observer interface's registered name.
	Type string `msgpack:"t"`
	// Silo is the id of the silo that delivers calls to the observer: the
	// gateway the client that made it is connected to, or the silo of the
	// grain that made it.
	Silo string `msgpack:"s"`
	// Incarnation is that silo's incarnation when the observer was made:
	// a silo that restarted (or rejoined) under the same id does not have
	// it.
	Incarnation int64 `msgpack:"i"`
	// Key identifies the observer on that silo.
	Key string `msgpack:"k"`
}

// IsZero reports whether r refers to nothing.
func (r ObserverRef) IsZero() bool { return r == ObserverRef{} }

func (r ObserverRef) String() string {
	if r.IsZero() {
		return "observer(none)"
	}
	return fmt.Sprintf("observer(%s on silo %s)", r.Type, r.Silo)
}

// ObserverHandle is an observer made callable by an ObserverHost.
type ObserverHandle interface {
	// Ref returns the observer's reference.
	Ref() ObserverRef
	// Delete stops the observer: calls that arrive from now on fail with
	// ErrObserverGone (once the silo that delivers them knows; calls
	// delivered meanwhile are dropped), and Done is closed. Idempotent.
	Delete()
	// Done is closed when the observer can no longer be called: deleted,
	// its host closed, or (for a client's observer) the connection to the
	// gateway that delivers its calls lost. A client makes a new observer
	// and subscribes again.
	Done() <-chan struct{}
}

// ObserverHost makes local objects callable as observers: runtime.Client
// and a grain's Context implement it. Generated NewXxxRef functions call
// it.
type ObserverHost interface {
	// CreateObserver makes obj, which implements the observer interface
	// t describes, callable. Calls run one at a time, in the order the
	// host receives them, on a goroutine of the host.
	CreateObserver(ctx context.Context, t *TypeDesc, obj any) (ObserverHandle, error)
}

// ObserverCaller calls observers: the runtime's silo and a grain's Context
// implement it, next to Caller.
//
// An observer call is one-way. It returns nil once the silo that delivers
// the observer's calls accepted it for delivery (queued on the client's
// gateway connection, or on the observer's queue on that silo), not when
// the observer ran it: delivery is at most once, and an error the
// observer's method returns is logged where it ran, not returned. It fails
// with an error matching ErrObserverGone when the observer does not exist
// any more (that silo has no such observer, or the silo is not an active
// member of the cluster), with ErrOverloaded when its queue is full, and
// with the usual transport errors (ErrSiloUnavailable, ErrTimeout, ...)
// when that silo cannot be reached.
type ObserverCaller interface {
	InvokeObserver(ctx context.Context, ref ObserverRef, t *TypeDesc, m *MethodDesc, args any) error
}

// InvokeObserver calls method m of the observer ref through c, which must
// implement ObserverCaller. For generated code.
func InvokeObserver(ctx context.Context, c Caller, ref ObserverRef, t *TypeDesc, m *MethodDesc, args any) error {
	if ref.IsZero() {
		return fmt.Errorf("%w: call of %s.%s on a zero observer reference", ErrObserverGone, t.Name, m.Name)
	}
	if ref.Type != t.Name {
		return fmt.Errorf("%w: %s is a reference to a %s, not a %s", ErrBadRequest, ref, ref.Type, t.Name)
	}
	oc, ok := c.(ObserverCaller)
	if !ok || c == nil {
		return fmt.Errorf("%w: %T cannot call observers (call them through a grain's Context)", ErrBadRequest, c)
	}
	return oc.InvokeObserver(ctx, ref, t, m, args)
}

// NewObserverRef makes obj callable through h as an observer of the
// interface t describes. For generated code: NewXxxRef wraps it.
func NewObserverRef(ctx context.Context, h ObserverHost, t *TypeDesc, obj any) (ObserverHandle, error) {
	if h == nil {
		return nil, fmt.Errorf("%w: no observer host for a %s", ErrBadRequest, t.Name)
	}
	if obj == nil {
		return nil, fmt.Errorf("%w: nil %s", ErrBadRequest, t.Name)
	}
	return h.CreateObserver(ctx, t, obj)
}
