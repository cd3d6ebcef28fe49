// Package grain is what a grain author imports: identities, the Context a
// grain receives from the runtime, typed persistent state, lifecycle hooks,
// per-type options and the errors the runtime returns.
//
// A grain type is a Go interface marked for the generator:
//
//	//granary:grain
//	type Greeter interface {
//		Greet(ctx context.Context, name string) (string, error)
//	}
//
// granary-gen writes a typed reference (NewGreeterRef), a registration
// function (RegisterGreeter) and a dispatcher next to it. The
// implementation is a plain struct built by a factory that receives a
// Context:
//
//	type greeter struct {
//		count *grain.State[greeterState]
//	}
//
//	func newGreeter(c grain.Context) hello.Greeter {
//		return &greeter{count: grain.NewState[greeterState](c, "count")}
//	}
//
// The runtime (package runtime) activates a grain on its first call, loads
// its declared states, runs OnActivate if the implementation has it, serves
// calls one at a time, and when the grain has been idle for its collection
// age runs OnDeactivate, writes state that changed and drops the activation.
//
// This package depends on no other package of Granary but grain/codec (the
// decoder of untrusted msgpack, which imports nothing of Granary);
// generated code uses
// only the invocation surface declared in invoke.go.
package grain
