package grain

// Plumbing for generated code only. Code written by granary-gen uses what
// this file and methods.go declare; nothing else should: the shapes here
// change with the generator, guarded by SupportPackageIsVersionN.

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"unicode"
	"unicode/utf8"
)

// SupportPackageIsVersion2 is referenced by generated code. Code generated
// for an incompatible invocation surface refers to a constant that does not
// exist and fails to compile, instead of misbehaving at run time. Version 2:
// methods are addressed by wire name and signature fingerprint, through the
// NewMethodN and NewActionN helpers.
const SupportPackageIsVersion2 = true

// Method is a method descriptor built by a NewMethodN or NewActionN helper,
// for NewType. For generated code.
type Method interface {
	methodDesc() *MethodDesc
}

// NewType describes the grain type registered as name with the given
// methods, in source order. It panics if two methods have the same wire
// name: generated code never does that (the generator reports it). For
// generated code.
func NewType(name string, methods ...Method) *TypeDesc {
	t := &TypeDesc{Name: name, Methods: make([]MethodDesc, len(methods)), byName: make(map[string]*MethodDesc, len(methods))}
	for i, m := range methods {
		d := m.methodDesc()
		if _, dup := t.byName[d.Name]; dup {
			panic(fmt.Sprintf("grain: %s has two methods with the wire name %s", name, d.Name))
		}
		t.Methods[i] = *d
		t.byName[d.Name] = d
	}
	return t
}

// Reply is the reply tuple of a method with a result, encoded as a msgpack
// array of one element (like the argument tuples ArgsN). For generated code.
type Reply[R any] struct {
	_msgpack struct{} `msgpack:",as_array"`
	V        R
}

// noReply is the result type of a method that returns only an error.
type noReply struct{}

// method is the core of every MethodN and ActionN: the descriptor, with T
// the argument tuple and R the result (noReply for actions).
type method[T, R any] struct {
	d MethodDesc
}

func (m *method[T, R]) methodDesc() *MethodDesc { return &m.d }

// Desc returns the method's descriptor.
func (m *method[T, R]) Desc() *MethodDesc { return &m.d }

// init fills the descriptor of the method fn (a method expression: its
// first two parameters are the interface and the context) under the wire
// name name. invoke unpacks the tuple and calls fn.
func (m *method[T, R]) init(name string, flags MethodFlags, fn any, hasReply bool, invoke func(context.Context, any, *T) (R, error)) {
	if err := checkMethodName(name); err != nil {
		panic(fmt.Sprintf("grain: method name %q: %v", name, err))
	}
	sig := signatureOf(reflect.TypeOf(fn), 2)
	m.d = MethodDesc{Name: name, Signature: sig, Fingerprint: Fingerprint(sig), Flags: flags,
		NewArgs: func() any { return new(T) }}
	if !hasReply {
		m.d.Invoke = func(ctx context.Context, impl any, args any) (any, error) {
			_, err := invoke(ctx, impl, args.(*T))
			return nil, err
		}
		return
	}
	m.d.NewReply = func() any { return new(Reply[R]) }
	m.d.Invoke = func(ctx context.Context, impl any, args any) (any, error) {
		r, err := invoke(ctx, impl, args.(*T))
		if err != nil {
			return nil, err
		}
		return &Reply[R]{V: r}, nil
	}
}

// call invokes the method through r and unpacks the reply.
func (m *method[T, R]) call(ctx context.Context, r Ref, args *T) (R, error) {
	var zero R
	reply, err := r.caller.Invoke(ctx, &Call{Target: r.id, Type: r.typ, Method: &m.d, Args: args})
	if err != nil || m.d.NewReply == nil {
		return zero, err
	}
	rp, ok := reply.(*Reply[R])
	if !ok {
		return zero, WithOutcome(fmt.Errorf("%w: %s.%s: reply is a %T, want %T", ErrBadRequest, r.id, m.d.Name, reply, rp), OutcomeUnknown)
	}
	return rp.V, nil
}

// MaxMethodName is the longest wire name of a method, in bytes.
const MaxMethodName = 128

// checkMethodName checks a wire name: 1 to MaxMethodName bytes of
// printable UTF-8 without spaces, not starting with '$' (reserved for the
// runtime's methods, such as ReminderMethod).
func checkMethodName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("empty")
	case len(s) > MaxMethodName:
		return fmt.Errorf("longer than %d bytes", MaxMethodName)
	case !utf8.ValidString(s):
		return fmt.Errorf("not valid UTF-8")
	case strings.HasPrefix(s, "$"):
		return fmt.Errorf("starts with '$', which is reserved for the runtime's methods")
	case strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }):
		return fmt.Errorf("contains a space or an unprintable character")
	}
	return nil
}
