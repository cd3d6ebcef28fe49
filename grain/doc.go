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
// calls one at a time (a turn that waits on a call it made lets others start
// only as Reentrant, WithCallChainReentrancy, AlwaysInterleave and ReadOnly
// say), and when the grain has been idle for its collection
// age runs OnDeactivate, writes state that changed and drops the activation.
//
// # Method identity and compatibility
//
// A call names its method by wire name (the Go name, or the one given with
// //granary:method name=...) and by the fingerprint of its signature: the
// parameter and result types as written, with package names, e.g.
// "(string, int64) (journal.Ack, error)" (see Fingerprint). A silo runs a
// call only in the method of that name whose fingerprint matches: a name
// it does not have is ErrUnknownMethod, a different signature
// ErrIncompatible, and neither runs anything. So adding, reordering and
// renaming methods (with the directive) is compatible across versions of
// an interface; changing a parameter or result type is not. Struct
// arguments are not part of the fingerprint: their fields evolve like
// msgpack maps (an added field is zero on the other side, an unknown one
// ignored).
//
// # Calling many grains
//
// FanOut calls many grains at once, at most MaxInFlight at a time, from a
// client or from a grain method, and gathers which answered, which failed
// and which did not answer before the context ended; it never returns
// while a call it started still runs.
//
// # Generated code
//
// Generated code uses the invocation surface of invoke.go (Caller, Ref,
// TypeDesc, MethodDesc) and the plumbing of generated.go and methods.go
// (NewType, the NewMethodN and NewActionN helpers, the ArgsN and Reply
// tuples, SupportPackageIsVersion2), which exists for it alone.
//
// This package depends on no other package of Granary but grain/codec (the
// decoder of untrusted msgpack, which imports nothing of Granary).
package grain
