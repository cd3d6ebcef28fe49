package grain

import "context"

// The typed method helpers of generated code, one per number of parameters
// after the context (0 to MaxParams): NewMethodN for methods that return a
// result and an error, NewActionN for methods that return only an error.
// Each builds the method's descriptor (wire name, signature fingerprint,
// flags, argument and reply tuples, dispatch through the method
// expression) once, at package initialisation; its Call method is what a
// generated reference method calls. This file is regular: every arity has
// the same shape.

// MaxParams is the largest number of parameters after the context a grain
// method may have; pass a struct to pass more.
const MaxParams = 8

// Args0 is the argument tuple of a method with no parameters: an empty
// msgpack array.
type Args0 struct {
	_msgpack struct{} `msgpack:",as_array"`
}

// Method0 is a method with no parameters and a result.
type Method0[R any] struct{ method[Args0, R] }

// NewMethod0 describes the method fn (a method expression such as
// Greeter.Greet) under the wire name name.
func NewMethod0[I any, R any](name string, fn func(I, context.Context) (R, error), flags MethodFlags) *Method0[R] {
	m := new(Method0[R])
	m.init(name, flags, fn, true, func(ctx context.Context, impl any, a *Args0) (R, error) {
		return fn(impl.(I), ctx)
	})
	return m
}

// Call calls the method on the grain r refers to.
func (m *Method0[R]) Call(ctx context.Context, r Ref) (R, error) {
	return m.call(ctx, r, &Args0{})
}

// Action0 is a method with no parameters that returns only an error.
type Action0 struct{ method[Args0, noReply] }

// NewAction0 describes the method fn (a method expression such as
// Greeter.Notify) under the wire name name.
func NewAction0[I any](name string, fn func(I, context.Context) error, flags MethodFlags) *Action0 {
	m := new(Action0)
	m.init(name, flags, fn, false, func(ctx context.Context, impl any, a *Args0) (noReply, error) {
		return noReply{}, fn(impl.(I), ctx)
	})
	return m
}

// Call calls the method on the grain r refers to.
func (m *Action0) Call(ctx context.Context, r Ref) error {
	_, err := m.call(ctx, r, &Args0{})
	return err
}

// Args1 is the argument tuple of a method with one parameter, encoded as
// a msgpack array.
type Args1[A0 any] struct {
	_msgpack struct{} `msgpack:",as_array"`
	V0       A0
}

// Method1 is a method with one parameter and a result.
type Method1[A0, R any] struct{ method[Args1[A0], R] }

// NewMethod1 describes the method fn (a method expression such as
// Greeter.Greet) under the wire name name.
func NewMethod1[I any, A0, R any](name string, fn func(I, context.Context, A0) (R, error), flags MethodFlags) *Method1[A0, R] {
	m := new(Method1[A0, R])
	m.init(name, flags, fn, true, func(ctx context.Context, impl any, a *Args1[A0]) (R, error) {
		return fn(impl.(I), ctx, a.V0)
	})
	return m
}

// Call calls the method on the grain r refers to.
func (m *Method1[A0, R]) Call(ctx context.Context, r Ref, a0 A0) (R, error) {
	return m.call(ctx, r, &Args1[A0]{V0: a0})
}

// Action1 is a method with one parameter that returns only an error.
type Action1[A0 any] struct{ method[Args1[A0], noReply] }

// NewAction1 describes the method fn (a method expression such as
// Greeter.Notify) under the wire name name.
func NewAction1[I any, A0 any](name string, fn func(I, context.Context, A0) error, flags MethodFlags) *Action1[A0] {
	m := new(Action1[A0])
	m.init(name, flags, fn, false, func(ctx context.Context, impl any, a *Args1[A0]) (noReply, error) {
		return noReply{}, fn(impl.(I), ctx, a.V0)
	})
	return m
}

// Call calls the method on the grain r refers to.
func (m *Action1[A0]) Call(ctx context.Context, r Ref, a0 A0) error {
	_, err := m.call(ctx, r, &Args1[A0]{V0: a0})
	return err
}

// Args2 is the argument tuple of a method with two parameters, encoded as
// a msgpack array.
type Args2[A0, A1 any] struct {
	_msgpack struct{} `msgpack:",as_array"`
	V0       A0
	V1       A1
}

// Method2 is a method with two parameters and a result.
type Method2[A0, A1, R any] struct{ method[Args2[A0, A1], R] }

// NewMethod2 describes the method fn (a method expression such as
// Greeter.Greet) under the wire name name.
func NewMethod2[I any, A0, A1, R any](name string, fn func(I, context.Context, A0, A1) (R, error), flags MethodFlags) *Method2[A0, A1, R] {
	m := new(Method2[A0, A1, R])
	m.init(name, flags, fn, true, func(ctx context.Context, impl any, a *Args2[A0, A1]) (R, error) {
		return fn(impl.(I), ctx, a.V0, a.V1)
	})
	return m
}

// Call calls the method on the grain r refers to.
func (m *Method2[A0, A1, R]) Call(ctx context.Context, r Ref, a0 A0, a1 A1) (R, error) {
	return m.call(ctx, r, &Args2[A0, A1]{V0: a0, V1: a1})
}

// Action2 is a method with two parameters that returns only an error.
type Action2[A0, A1 any] struct{ method[Args2[A0, A1], noReply] }

// NewAction2 describes the method fn (a method expression such as
// Greeter.Notify) under the wire name name.
func NewAction2[I any, A0, A1 any](name string, fn func(I, context.Context, A0, A1) error, flags MethodFlags) *Action2[A0, A1] {
	m := new(Action2[A0, A1])
	m.init(name, flags, fn, false, func(ctx context.Context, impl any, a *Args2[A0, A1]) (noReply, error) {
		return noReply{}, fn(impl.(I), ctx, a.V0, a.V1)
	})
	return m
}

// Call calls the method on the grain r refers to.
func (m *Action2[A0, A1]) Call(ctx context.Context, r Ref, a0 A0, a1 A1) error {
	_, err := m.call(ctx, r, &Args2[A0, A1]{V0: a0, V1: a1})
	return err
}

// Args3 is the argument tuple of a method with three parameters, encoded as
// a msgpack array.
type Args3[A0, A1, A2 any] struct {
	_msgpack struct{} `msgpack:",as_array"`
	V0       A0
	V1       A1
	V2       A2
}

// Method3 is a method with three parameters and a result.
type Method3[A0, A1, A2, R any] struct{ method[Args3[A0, A1, A2], R] }

// NewMethod3 describes the method fn (a method expression such as
// Greeter.Greet) under the wire name name.
func NewMethod3[I any, A0, A1, A2, R any](name string, fn func(I, context.Context, A0, A1, A2) (R, error), flags MethodFlags) *Method3[A0, A1, A2, R] {
	m := new(Method3[A0, A1, A2, R])
	m.init(name, flags, fn, true, func(ctx context.Context, impl any, a *Args3[A0, A1, A2]) (R, error) {
		return fn(impl.(I), ctx, a.V0, a.V1, a.V2)
	})
	return m
}

// Call calls the method on the grain r refers to.
func (m *Method3[A0, A1, A2, R]) Call(ctx context.Context, r Ref, a0 A0, a1 A1, a2 A2) (R, error) {
	return m.call(ctx, r, &Args3[A0, A1, A2]{V0: a0, V1: a1, V2: a2})
}

// Action3 is a method with three parameters that returns only an error.
type Action3[A0, A1, A2 any] struct {
	method[Args3[A0, A1, A2], noReply]
}

// NewAction3 describes the method fn (a method expression such as
// Greeter.Notify) under the wire name name.
func NewAction3[I any, A0, A1, A2 any](name string, fn func(I, context.Context, A0, A1, A2) error, flags MethodFlags) *Action3[A0, A1, A2] {
	m := new(Action3[A0, A1, A2])
	m.init(name, flags, fn, false, func(ctx context.Context, impl any, a *Args3[A0, A1, A2]) (noReply, error) {
		return noReply{}, fn(impl.(I), ctx, a.V0, a.V1, a.V2)
	})
	return m
}

// Call calls the method on the grain r refers to.
func (m *Action3[A0, A1, A2]) Call(ctx context.Context, r Ref, a0 A0, a1 A1, a2 A2) error {
	_, err := m.call(ctx, r, &Args3[A0, A1, A2]{V0: a0, V1: a1, V2: a2})
	return err
}

// Args4 is the argument tuple of a method with four parameters, encoded as
// a msgpack array.
type Args4[A0, A1, A2, A3 any] struct {
	_msgpack struct{} `msgpack:",as_array"`
	V0       A0
	V1       A1
	V2       A2
	V3       A3
}

// Method4 is a method with four parameters and a result.
type Method4[A0, A1, A2, A3, R any] struct {
	method[Args4[A0, A1, A2, A3], R]
}

// NewMethod4 describes the method fn (a method expression such as
// Greeter.Greet) under the wire name name.
func NewMethod4[I any, A0, A1, A2, A3, R any](name string, fn func(I, context.Context, A0, A1, A2, A3) (R, error), flags MethodFlags) *Method4[A0, A1, A2, A3, R] {
	m := new(Method4[A0, A1, A2, A3, R])
	m.init(name, flags, fn, true, func(ctx context.Context, impl any, a *Args4[A0, A1, A2, A3]) (R, error) {
		return fn(impl.(I), ctx, a.V0, a.V1, a.V2, a.V3)
	})
	return m
}

// Call calls the method on the grain r refers to.
func (m *Method4[A0, A1, A2, A3, R]) Call(ctx context.Context, r Ref, a0 A0, a1 A1, a2 A2, a3 A3) (R, error) {
	return m.call(ctx, r, &Args4[A0, A1, A2, A3]{V0: a0, V1: a1, V2: a2, V3: a3})
}

// Action4 is a method with four parameters that returns only an error.
type Action4[A0, A1, A2, A3 any] struct {
	method[Args4[A0, A1, A2, A3], noReply]
}

// NewAction4 describes the method fn (a method expression such as
// Greeter.Notify) under the wire name name.
func NewAction4[I any, A0, A1, A2, A3 any](name string, fn func(I, context.Context, A0, A1, A2, A3) error, flags MethodFlags) *Action4[A0, A1, A2, A3] {
	m := new(Action4[A0, A1, A2, A3])
	m.init(name, flags, fn, false, func(ctx context.Context, impl any, a *Args4[A0, A1, A2, A3]) (noReply, error) {
		return noReply{}, fn(impl.(I), ctx, a.V0, a.V1, a.V2, a.V3)
	})
	return m
}

// Call calls the method on the grain r refers to.
func (m *Action4[A0, A1, A2, A3]) Call(ctx context.Context, r Ref, a0 A0, a1 A1, a2 A2, a3 A3) error {
	_, err := m.call(ctx, r, &Args4[A0, A1, A2, A3]{V0: a0, V1: a1, V2: a2, V3: a3})
	return err
}

// Args5 is the argument tuple of a method with five parameters, encoded as
// a msgpack array.
type Args5[A0, A1, A2, A3, A4 any] struct {
	_msgpack struct{} `msgpack:",as_array"`
	V0       A0
	V1       A1
	V2       A2
	V3       A3
	V4       A4
}

// Method5 is a method with five parameters and a result.
type Method5[A0, A1, A2, A3, A4, R any] struct {
	method[Args5[A0, A1, A2, A3, A4], R]
}

// NewMethod5 describes the method fn (a method expression such as
// Greeter.Greet) under the wire name name.
func NewMethod5[I any, A0, A1, A2, A3, A4, R any](name string, fn func(I, context.Context, A0, A1, A2, A3, A4) (R, error), flags MethodFlags) *Method5[A0, A1, A2, A3, A4, R] {
	m := new(Method5[A0, A1, A2, A3, A4, R])
	m.init(name, flags, fn, true, func(ctx context.Context, impl any, a *Args5[A0, A1, A2, A3, A4]) (R, error) {
		return fn(impl.(I), ctx, a.V0, a.V1, a.V2, a.V3, a.V4)
	})
	return m
}

// Call calls the method on the grain r refers to.
func (m *Method5[A0, A1, A2, A3, A4, R]) Call(ctx context.Context, r Ref, a0 A0, a1 A1, a2 A2, a3 A3, a4 A4) (R, error) {
	return m.call(ctx, r, &Args5[A0, A1, A2, A3, A4]{V0: a0, V1: a1, V2: a2, V3: a3, V4: a4})
}

// Action5 is a method with five parameters that returns only an error.
type Action5[A0, A1, A2, A3, A4 any] struct {
	method[Args5[A0, A1, A2, A3, A4], noReply]
}

// NewAction5 describes the method fn (a method expression such as
// Greeter.Notify) under the wire name name.
func NewAction5[I any, A0, A1, A2, A3, A4 any](name string, fn func(I, context.Context, A0, A1, A2, A3, A4) error, flags MethodFlags) *Action5[A0, A1, A2, A3, A4] {
	m := new(Action5[A0, A1, A2, A3, A4])
	m.init(name, flags, fn, false, func(ctx context.Context, impl any, a *Args5[A0, A1, A2, A3, A4]) (noReply, error) {
		return noReply{}, fn(impl.(I), ctx, a.V0, a.V1, a.V2, a.V3, a.V4)
	})
	return m
}

// Call calls the method on the grain r refers to.
func (m *Action5[A0, A1, A2, A3, A4]) Call(ctx context.Context, r Ref, a0 A0, a1 A1, a2 A2, a3 A3, a4 A4) error {
	_, err := m.call(ctx, r, &Args5[A0, A1, A2, A3, A4]{V0: a0, V1: a1, V2: a2, V3: a3, V4: a4})
	return err
}

// Args6 is the argument tuple of a method with six parameters, encoded as
// a msgpack array.
type Args6[A0, A1, A2, A3, A4, A5 any] struct {
	_msgpack struct{} `msgpack:",as_array"`
	V0       A0
	V1       A1
	V2       A2
	V3       A3
	V4       A4
	V5       A5
}

// Method6 is a method with six parameters and a result.
type Method6[A0, A1, A2, A3, A4, A5, R any] struct {
	method[Args6[A0, A1, A2, A3, A4, A5], R]
}

// NewMethod6 describes the method fn (a method expression such as
// Greeter.Greet) under the wire name name.
func NewMethod6[I any, A0, A1, A2, A3, A4, A5, R any](name string, fn func(I, context.Context, A0, A1, A2, A3, A4, A5) (R, error), flags MethodFlags) *Method6[A0, A1, A2, A3, A4, A5, R] {
	m := new(Method6[A0, A1, A2, A3, A4, A5, R])
	m.init(name, flags, fn, true, func(ctx context.Context, impl any, a *Args6[A0, A1, A2, A3, A4, A5]) (R, error) {
		return fn(impl.(I), ctx, a.V0, a.V1, a.V2, a.V3, a.V4, a.V5)
	})
	return m
}

// Call calls the method on the grain r refers to.
func (m *Method6[A0, A1, A2, A3, A4, A5, R]) Call(ctx context.Context, r Ref, a0 A0, a1 A1, a2 A2, a3 A3, a4 A4, a5 A5) (R, error) {
	return m.call(ctx, r, &Args6[A0, A1, A2, A3, A4, A5]{V0: a0, V1: a1, V2: a2, V3: a3, V4: a4, V5: a5})
}

// Action6 is a method with six parameters that returns only an error.
type Action6[A0, A1, A2, A3, A4, A5 any] struct {
	method[Args6[A0, A1, A2, A3, A4, A5], noReply]
}

// NewAction6 describes the method fn (a method expression such as
// Greeter.Notify) under the wire name name.
func NewAction6[I any, A0, A1, A2, A3, A4, A5 any](name string, fn func(I, context.Context, A0, A1, A2, A3, A4, A5) error, flags MethodFlags) *Action6[A0, A1, A2, A3, A4, A5] {
	m := new(Action6[A0, A1, A2, A3, A4, A5])
	m.init(name, flags, fn, false, func(ctx context.Context, impl any, a *Args6[A0, A1, A2, A3, A4, A5]) (noReply, error) {
		return noReply{}, fn(impl.(I), ctx, a.V0, a.V1, a.V2, a.V3, a.V4, a.V5)
	})
	return m
}

// Call calls the method on the grain r refers to.
func (m *Action6[A0, A1, A2, A3, A4, A5]) Call(ctx context.Context, r Ref, a0 A0, a1 A1, a2 A2, a3 A3, a4 A4, a5 A5) error {
	_, err := m.call(ctx, r, &Args6[A0, A1, A2, A3, A4, A5]{V0: a0, V1: a1, V2: a2, V3: a3, V4: a4, V5: a5})
	return err
}

// Args7 is the argument tuple of a method with seven parameters, encoded as
// a msgpack array.
type Args7[A0, A1, A2, A3, A4, A5, A6 any] struct {
	_msgpack struct{} `msgpack:",as_array"`
	V0       A0
	V1       A1
	V2       A2
	V3       A3
	V4       A4
	V5       A5
	V6       A6
}

// Method7 is a method with seven parameters and a result.
type Method7[A0, A1, A2, A3, A4, A5, A6, R any] struct {
	method[Args7[A0, A1, A2, A3, A4, A5, A6], R]
}

// NewMethod7 describes the method fn (a method expression such as
// Greeter.Greet) under the wire name name.
func NewMethod7[I any, A0, A1, A2, A3, A4, A5, A6, R any](name string, fn func(I, context.Context, A0, A1, A2, A3, A4, A5, A6) (R, error), flags MethodFlags) *Method7[A0, A1, A2, A3, A4, A5, A6, R] {
	m := new(Method7[A0, A1, A2, A3, A4, A5, A6, R])
	m.init(name, flags, fn, true, func(ctx context.Context, impl any, a *Args7[A0, A1, A2, A3, A4, A5, A6]) (R, error) {
		return fn(impl.(I), ctx, a.V0, a.V1, a.V2, a.V3, a.V4, a.V5, a.V6)
	})
	return m
}

// Call calls the method on the grain r refers to.
func (m *Method7[A0, A1, A2, A3, A4, A5, A6, R]) Call(ctx context.Context, r Ref, a0 A0, a1 A1, a2 A2, a3 A3, a4 A4, a5 A5, a6 A6) (R, error) {
	return m.call(ctx, r, &Args7[A0, A1, A2, A3, A4, A5, A6]{V0: a0, V1: a1, V2: a2, V3: a3, V4: a4, V5: a5, V6: a6})
}

// Action7 is a method with seven parameters that returns only an error.
type Action7[A0, A1, A2, A3, A4, A5, A6 any] struct {
	method[Args7[A0, A1, A2, A3, A4, A5, A6], noReply]
}

// NewAction7 describes the method fn (a method expression such as
// Greeter.Notify) under the wire name name.
func NewAction7[I any, A0, A1, A2, A3, A4, A5, A6 any](name string, fn func(I, context.Context, A0, A1, A2, A3, A4, A5, A6) error, flags MethodFlags) *Action7[A0, A1, A2, A3, A4, A5, A6] {
	m := new(Action7[A0, A1, A2, A3, A4, A5, A6])
	m.init(name, flags, fn, false, func(ctx context.Context, impl any, a *Args7[A0, A1, A2, A3, A4, A5, A6]) (noReply, error) {
		return noReply{}, fn(impl.(I), ctx, a.V0, a.V1, a.V2, a.V3, a.V4, a.V5, a.V6)
	})
	return m
}

// Call calls the method on the grain r refers to.
func (m *Action7[A0, A1, A2, A3, A4, A5, A6]) Call(ctx context.Context, r Ref, a0 A0, a1 A1, a2 A2, a3 A3, a4 A4, a5 A5, a6 A6) error {
	_, err := m.call(ctx, r, &Args7[A0, A1, A2, A3, A4, A5, A6]{V0: a0, V1: a1, V2: a2, V3: a3, V4: a4, V5: a5, V6: a6})
	return err
}

// Args8 is the argument tuple of a method with eight parameters, encoded as
// a msgpack array.
type Args8[A0, A1, A2, A3, A4, A5, A6, A7 any] struct {
	_msgpack struct{} `msgpack:",as_array"`
	V0       A0
	V1       A1
	V2       A2
	V3       A3
	V4       A4
	V5       A5
	V6       A6
	V7       A7
}

// Method8 is a method with eight parameters and a result.
type Method8[A0, A1, A2, A3, A4, A5, A6, A7, R any] struct {
	method[Args8[A0, A1, A2, A3, A4, A5, A6, A7], R]
}

// NewMethod8 describes the method fn (a method expression such as
// Greeter.Greet) under the wire name name.
func NewMethod8[I any, A0, A1, A2, A3, A4, A5, A6, A7, R any](name string, fn func(I, context.Context, A0, A1, A2, A3, A4, A5, A6, A7) (R, error), flags MethodFlags) *Method8[A0, A1, A2, A3, A4, A5, A6, A7, R] {
	m := new(Method8[A0, A1, A2, A3, A4, A5, A6, A7, R])
	m.init(name, flags, fn, true, func(ctx context.Context, impl any, a *Args8[A0, A1, A2, A3, A4, A5, A6, A7]) (R, error) {
		return fn(impl.(I), ctx, a.V0, a.V1, a.V2, a.V3, a.V4, a.V5, a.V6, a.V7)
	})
	return m
}

// Call calls the method on the grain r refers to.
func (m *Method8[A0, A1, A2, A3, A4, A5, A6, A7, R]) Call(ctx context.Context, r Ref, a0 A0, a1 A1, a2 A2, a3 A3, a4 A4, a5 A5, a6 A6, a7 A7) (R, error) {
	return m.call(ctx, r, &Args8[A0, A1, A2, A3, A4, A5, A6, A7]{V0: a0, V1: a1, V2: a2, V3: a3, V4: a4, V5: a5, V6: a6, V7: a7})
}

// Action8 is a method with eight parameters that returns only an error.
type Action8[A0, A1, A2, A3, A4, A5, A6, A7 any] struct {
	method[Args8[A0, A1, A2, A3, A4, A5, A6, A7], noReply]
}

// NewAction8 describes the method fn (a method expression such as
// Greeter.Notify) under the wire name name.
func NewAction8[I any, A0, A1, A2, A3, A4, A5, A6, A7 any](name string, fn func(I, context.Context, A0, A1, A2, A3, A4, A5, A6, A7) error, flags MethodFlags) *Action8[A0, A1, A2, A3, A4, A5, A6, A7] {
	m := new(Action8[A0, A1, A2, A3, A4, A5, A6, A7])
	m.init(name, flags, fn, false, func(ctx context.Context, impl any, a *Args8[A0, A1, A2, A3, A4, A5, A6, A7]) (noReply, error) {
		return noReply{}, fn(impl.(I), ctx, a.V0, a.V1, a.V2, a.V3, a.V4, a.V5, a.V6, a.V7)
	})
	return m
}

// Call calls the method on the grain r refers to.
func (m *Action8[A0, A1, A2, A3, A4, A5, A6, A7]) Call(ctx context.Context, r Ref, a0 A0, a1 A1, a2 A2, a3 A3, a4 A4, a5 A5, a6 A6, a7 A7) error {
	_, err := m.call(ctx, r, &Args8[A0, A1, A2, A3, A4, A5, A6, A7]{V0: a0, V1: a1, V2: a2, V3: a3, V4: a4, V5: a5, V6: a6, V7: a7})
	return err
}
