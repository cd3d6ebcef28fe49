package grain

import (
	"context"
	"fmt"
)

// MethodFlags modify how the runtime schedules and delivers a call.
type MethodFlags uint8

const (
	// ReadOnly methods do not change state (//granary:readonly): the
	// runtime writes no state after them, and while a read-only call waits
	// on a call it made, other read-only calls of the same activation may
	// start (one goroutine runs the grain's code at a time all the same).
	ReadOnly MethodFlags = 1 << iota
	// OneWay methods send no reply; the caller does not wait for the turn
	// (//granary:oneway).
	OneWay
	// CopyFree methods take and return only values with no shared
	// references (numbers, strings, structs and arrays of those), so an
	// in-process call may pass them without copying. The generator sets it;
	// methods without it have their arguments and results deep-copied on
	// in-process calls, so caller and grain never share memory.
	CopyFree
	// AlwaysInterleave methods may start while any turn of the activation
	// waits on a call it made, whatever the type's reentrancy
	// (//granary:interleave); they still never run at the same instant as
	// another turn's code.
	AlwaysInterleave
)

// Has reports whether all of the bits in g are set in f.
func (f MethodFlags) Has(g MethodFlags) bool { return f&g == g }

// MethodDesc describes one method of a grain interface. Generated code
// builds them with the NewMethodN and NewActionN helpers; the runtime uses
// them to dispatch and to encode.
//
// A method's wire identity is its Name and its Fingerprint, never its
// position in the interface: see Fingerprint for the signature rule.
type MethodDesc struct {
	// Name is the method's wire name: the Go method name, or the name given
	// with //granary:method name=... so that a renamed Go method keeps it.
	// Errors and logs name methods by it.
	Name string
	// Signature is the canonical text of the parameter and result types,
	// e.g. "(string, []string) (map[string]int, error)"; see Fingerprint.
	Signature string
	// Fingerprint is a hash of Signature (see Fingerprint). A call is only
	// dispatched to a method with the same Name and Fingerprint.
	Fingerprint uint64
	// Flags modify scheduling and delivery.
	Flags MethodFlags
	// NewArgs returns a pointer to a zero argument tuple, to decode into.
	NewArgs func() any
	// NewReply returns a pointer to a zero result tuple, to decode into.
	// Nil when the method returns only an error.
	NewReply func() any
	// Invoke calls the method on impl with args (as NewArgs returns) and
	// returns the result tuple (as NewReply returns) or nil.
	Invoke func(ctx context.Context, impl any, args any) (reply any, err error)
}

// String returns the method's name and signature, e.g.
// "Greet(string) (string, error)".
func (m *MethodDesc) String() string { return m.Name + m.Signature }

// TypeDesc describes a grain interface: its registered name and its
// methods. Generated code builds it with NewType; do not modify it after
// that.
type TypeDesc struct {
	// Name is the registered grain type name, e.g. "bank.Account".
	Name string
	// Methods in interface source order. The order means nothing on the
	// wire: calls address methods by name.
	Methods []MethodDesc

	// byName indexes Methods; NewType fills it. Without it (a TypeDesc
	// written as a literal) Lookup searches Methods.
	byName map[string]*MethodDesc
}

// Lookup returns the method with wire name name, or nil. ReminderMethod is
// every type's method: it delivers a reminder tick.
func (t *TypeDesc) Lookup(name string) *MethodDesc {
	if name == ReminderMethod {
		return &reminderMethod
	}
	if t.byName != nil {
		return t.byName[name]
	}
	for i := range t.Methods {
		if t.Methods[i].Name == name {
			return &t.Methods[i]
		}
	}
	return nil
}

// Resolve returns the method a call of name with the signature fingerprint
// fp is dispatched to. A name the type does not have is ErrUnknownMethod;
// a method of that name whose signature has another fingerprint is
// ErrIncompatible, with a message that names this side's signature. Both
// did not run. No other method is ever chosen.
func (t *TypeDesc) Resolve(name string, fp uint64) (*MethodDesc, error) {
	m := t.Lookup(name)
	if m == nil {
		return nil, fmt.Errorf("%w: %s has no method %s", ErrUnknownMethod, t.Name, name)
	}
	if m.Fingerprint != fp {
		return nil, fmt.Errorf("%w: %s.%s here is %s%s (fingerprint %016x); the call was made for another signature (fingerprint %016x)",
			ErrIncompatible, t.Name, name, m.Name, m.Signature, m.Fingerprint, fp)
	}
	return m, nil
}

// ReminderMethod is the wire name of the method the runtime uses to deliver
// a reminder Tick to any grain type: it calls Remindable.ReceiveReminder.
// No Go method can have it ('$' is not a letter), and //granary:method
// names may not start with '$'.
const ReminderMethod = "$reminder"

var reminderMethod = MethodDesc{
	Name:        ReminderMethod,
	Signature:   "(grain.Tick) error",
	Fingerprint: Fingerprint("(grain.Tick) error"),
	NewArgs:     func() any { return new(Tick) },
	Invoke: func(ctx context.Context, impl any, args any) (any, error) {
		r, ok := impl.(Remindable)
		if !ok {
			return nil, fmt.Errorf("%w: %T has reminders but does not implement grain.Remindable", ErrUnknownMethod, impl)
		}
		return nil, r.ReceiveReminder(ctx, *args.(*Tick))
	},
}

// Call is one invocation, as built by a generated reference.
type Call struct {
	// Target is the grain being called.
	Target ID
	// Type describes the target's grain type, as the caller knows it.
	Type *TypeDesc
	// Method is the method called, one of Type's (or the reminder method).
	Method *MethodDesc
	// Args is a pointer to the method's argument tuple (as Method.NewArgs
	// returns).
	Args any
}

// Caller delivers calls to grains. The runtime's silo, its in-process
// client, the cross-process client and a grain's Context all implement it.
// Invoke returns the reply tuple (as MethodDesc.NewReply returns) or nil
// for methods that return only an error.
type Caller interface {
	Invoke(ctx context.Context, call *Call) (reply any, err error)
}

// Ref is the untyped core of a generated reference: a Caller and a target.
// Refs are small values; copy them freely.
type Ref struct {
	caller Caller
	id     ID
	typ    *TypeDesc
}

// NewRef returns a reference to the grain of type t with the given key,
// calling through c. Generated constructors wrap it.
func NewRef(c Caller, t *TypeDesc, key string) Ref {
	return Ref{caller: c, id: ID{Type: t.Name, Key: key}, typ: t}
}

// ID returns the target's identity.
func (r Ref) ID() ID { return r.id }

// Invoke calls method m with args (as m.NewArgs returns) and returns the
// reply tuple. Generated references call it through the typed helpers.
func (r Ref) Invoke(ctx context.Context, m *MethodDesc, args any) (any, error) {
	return r.caller.Invoke(ctx, &Call{Target: r.id, Type: r.typ, Method: m, Args: args})
}

// Factory builds a grain implementation for an activation.
type Factory func(Context) any

// Registry accepts grain type registrations. The runtime's silo
// configuration implements it; generated RegisterXxx functions call it.
type Registry interface {
	RegisterGrainType(t *TypeDesc, f Factory, opts ...TypeOption)
}
