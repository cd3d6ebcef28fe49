package grain

import (
	"context"
	"fmt"
)

// SupportPackageIsVersion1 is referenced by generated code. Code generated
// for an incompatible invocation surface refers to a constant that does not
// exist and fails to compile, instead of misbehaving at run time.
const SupportPackageIsVersion1 = true

// MethodFlags modify how the runtime schedules and delivers a call.
type MethodFlags uint8

const (
	// ReadOnly methods do not change state and may interleave with other
	// read-only calls of the same activation (//granary:readonly).
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
)

// Has reports whether all of the bits in g are set in f.
func (f MethodFlags) Has(g MethodFlags) bool { return f&g == g }

// MethodDesc describes one method of a grain interface. The generator writes
// one per method; the runtime uses it to dispatch and to encode.
type MethodDesc struct {
	// Name is the Go method name, for errors and logs.
	Name string
	// Flags modify scheduling and delivery.
	Flags MethodFlags
	// NewArgs returns a pointer to a zero argument struct, to decode into.
	NewArgs func() any
	// NewReply returns a pointer to a zero result struct, to decode into.
	// Nil when the method returns only an error.
	NewReply func() any
	// Invoke calls the method on impl with args (as NewArgs returns) and
	// returns the result struct (as NewReply returns) or nil.
	Invoke func(ctx context.Context, impl any, args any) (reply any, err error)
}

// TypeDesc describes a grain interface: its registered name and its methods.
// Method indexes are positions in Methods, in source order.
type TypeDesc struct {
	// Name is the registered grain type name, e.g. "bank.Account".
	Name string
	// Methods in interface source order.
	Methods []MethodDesc
}

// Method returns the method with index i, or nil and ErrUnknownMethod.
// ReminderMethod is every type's method: it delivers a reminder tick.
func (t *TypeDesc) Method(i int) (*MethodDesc, error) {
	if i == ReminderMethod {
		return &reminderMethod, nil
	}
	if i < 0 || i >= len(t.Methods) {
		return nil, ErrUnknownMethod
	}
	return &t.Methods[i], nil
}

// ReminderMethod is the method index the runtime uses to deliver a
// reminder Tick to any grain type: it calls Remindable.ReceiveReminder.
const ReminderMethod = 1<<31 - 1

var reminderMethod = MethodDesc{
	Name:    "ReceiveReminder",
	NewArgs: func() any { return new(Tick) },
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
	// Type describes the target's grain type.
	Type *TypeDesc
	// Method is the index of the method in Type.Methods.
	Method int
	// Args is a pointer to the method's argument struct.
	Args any
}

// Caller delivers calls to grains. The runtime's silo, its in-process
// client, the cross-process client and a grain's Context all implement it.
// Invoke returns the reply struct (as MethodDesc.NewReply returns) or nil
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

// Invoke calls method index m with args and returns the reply struct.
func (r Ref) Invoke(ctx context.Context, m int, args any) (any, error) {
	return r.caller.Invoke(ctx, &Call{Target: r.id, Type: r.typ, Method: m, Args: args})
}

// Factory builds a grain implementation for an activation.
type Factory func(Context) any

// Registry accepts grain type registrations. The runtime's silo
// configuration implements it; generated RegisterXxx functions call it.
type Registry interface {
	RegisterGrainType(t *TypeDesc, f Factory, opts ...TypeOption)
}
