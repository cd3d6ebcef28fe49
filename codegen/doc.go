// Package codegen is Granary's code generator: it turns Go interfaces
// marked as grain interfaces into typed references, registration functions
// and dispatchers that target the invocation surface of package grain. Most
// users run it through its command, granary-gen, from a go:generate line
// next to their grain interfaces:
//
//	//go:generate go run github.com/granary-rt/granary/codegen/cmd/granary-gen
//
// # Marking a grain interface
//
// A grain interface is an exported, non-generic interface type whose doc
// comment holds the directive //granary:grain (like //go: directives, no
// space after the slashes):
//
//	//granary:grain
//	type Account interface {
//		Deposit(ctx context.Context, amount int64) (balance int64, err error)
//		Balance(ctx context.Context) (int64, error) //granary:readonly
//		Notify(ctx context.Context, msg string) error //granary:oneway
//	}
//
// Its registered name, which grain IDs and the grain directory use, is
// "<package name>.<interface name>" ("bank.Account" in package bank), or
// the one given with //granary:grain name=bank.Account, which keeps IDs
// stable when the interface or its package is renamed. A name contains no
// slash and no space.
//
// A method carries directives in its doc comment or as a trailing comment:
//
//   - //granary:readonly: the method does not change the grain's state;
//     while a read-only call waits on a call it made, other read-only
//     calls of the same activation may run (grain.ReadOnly).
//   - //granary:interleave: the call may run while any call of the same
//     activation waits on a call it made, whatever the grain type's
//     reentrancy (grain.AlwaysInterleave). Meant for methods that do not
//     depend on the grain's state staying put, such as a status query.
//   - //granary:oneway: the caller does not wait for the call to run and
//     gets no reply; the method must return only error (grain.OneWay).
//   - //granary:method name=<wire name>: the name calls address the method
//     by. It defaults to the Go name; give the old name when renaming a
//     method, so that callers and silos built before the rename still
//     reach it. Wire names are unique within an interface, at most 128
//     bytes without spaces, and do not start with '$' (reserved for the
//     runtime's methods).
//
// A directive anywhere else (on a function, a grouped type declaration or
// a method of an unmarked interface) is an error, not silently ignored.
//
// # Rules
//
// The generator rejects, with "file:line: reason" errors at the offending
// method or parameter:
//
//   - a method whose first parameter is not context.Context, or whose last
//     result is not error, or with more than one result besides the error
//     (return a struct to return more), or with a variadic parameter (use
//     a slice), or with more than grain.MaxParams (8) parameters besides
//     the context (pass a struct), or unexported;
//   - a //granary:oneway method with a result besides the error;
//   - parameters and results that cannot cross the wire intact, found
//     recursively through pointers, slices, arrays, maps and struct fields:
//     channels, functions, unsafe.Pointer, uintptr, complex numbers,
//     interfaces (including any and error), unexported named types, grain
//     references (grain.Ref and generated XxxRef types: pass a key or a
//     grain.ID), unexported struct fields (msgpack drops them; tag one
//     `msgpack:"-"` to leave it out on purpose), embedded pointers to
//     unexported types and embedded unexported non-struct types (msgpack
//     cannot set them), recursive types (msgpack does not detect cycles,
//     and the decoder bounds nesting), types that encode themselves only
//     through pointer methods used in a map key or value, two fields
//     encoded under one key (by msgpack tags or an inlined embedded
//     struct), and structs with
//     encoding methods promoted from an embedded field and other fields
//     those methods leave out. Named types that encode themselves
//     (msgpack's CustomEncoder or Marshaler, encoding.BinaryMarshaler or
//     encoding.TextMarshaler, with the decoding counterpart) are accepted
//     whatever they contain;
//   - embedded interfaces and other embedded elements: declare the methods
//     in the grain interface itself, where their directives go;
//   - two methods with the same wire name;
//   - a method named ID (the generated reference has an ID method);
//   - grain interfaces in files with build constraints (a //go:build line
//     or a _GOOS/_GOARCH file name suffix), which the generated file cannot
//     repeat; and generated identifiers that collide with declared ones.
//
// Calls carry a method's wire name and the fingerprint of its parameter
// and result types (see package grain), never its position: adding and
// reordering methods, and renaming them with //granary:method name=..., is
// compatible with callers and silos built from the interface before; a
// method a silo does not have fails with grain.ErrUnknownMethod, one whose
// types changed with grain.ErrIncompatible.
//
// # Generated code
//
// For each Go file declaring grain interfaces, say account.go, the
// generator writes account_granary.go next to it, starting with the line
// "// Code generated by granary-gen. DO NOT EDIT.". The output is gofmt'd
// and deterministic. For an interface Account it declares:
//
//	var AccountType = grain.NewType("bank.Account", accountDeposit, ...)
//	type AccountRef struct{ ... }             // implements Account
//	func NewAccountRef(c grain.Caller, key string) AccountRef
//	func (r AccountRef) ID() grain.ID
//	func RegisterAccount(r grain.Registry, f func(grain.Context) Account, opts ...grain.TypeOption)
//
// and, unexported, one descriptor variable per method, built by grain's
// generic helpers from the method expression:
//
//	accountDeposit = grain.NewMethod1("Deposit", Account.Deposit, grain.CopyFree)
//
// whose Call method is the whole body of the reference method. Arguments
// and results travel as msgpack arrays (grain.ArgsN, grain.Reply). The generator
// sets grain.CopyFree on methods whose parameters and result are plain
// values: booleans, numbers, strings, time.Time, time.Duration, and arrays
// and structs of those whose fields are all exported and encoded. For
// those, an in-process call behaves exactly like a msgpack round trip, so
// the runtime passes them without copying.
//
// # Earlier outputs
//
// Generate never reads its earlier outputs: files ending in _granary.go in
// the packages it generates for are hidden from the go command while
// loading, so a stale or broken generated file (after an interface changed,
// a package was renamed or a merge went wrong) does not prevent
// regeneration, and type errors in the rest of the package are tolerated
// unless they concern a grain interface. A generated file whose source file
// no longer declares a grain interface is removed. (Generated files of
// dependencies that are not being generated for are loaded as they are;
// a dependency that does not compile is type-checked from source, errors
// tolerated.)
package codegen
