// Package bad holds grain interfaces that break the generator's rules.
// errors_test.go finds each expected error's line by the text on it.
package bad

import (
	"context"
	"io"
	"unsafe"
)

//granary:grain
type Signatures interface {
	NoParams() error
	NotContext(s string) error
	NoResults(ctx context.Context)
	NotError(ctx context.Context) int
	TwoResults(ctx context.Context) (int, string, error)
	Variadic(ctx context.Context, n int, xs ...int) error
	OneWayResult(ctx context.Context) (int, error) //granary:oneway
	lowercase(ctx context.Context) error
	ID(ctx context.Context) (string, error)
}

//granary:grain
type WireTypes interface {
	Chan(ctx context.Context, c chan int) error
	Func(ctx context.Context) (func(), error)
	Unsafe(ctx context.Context, p unsafe.Pointer) error
	Any(ctx context.Context, v any) error
	Reader(ctx context.Context, r io.Reader) error
	ErrorParam(ctx context.Context, e error) error
	Complex(ctx context.Context, c complex128) error
	Unexported(ctx context.Context, v local) error
	SliceOfChan(ctx context.Context, s [][2]chan int) error
	MapOfFunc(ctx context.Context, m map[string]*func()) error
	PtrAny(ctx context.Context) (*any, error)
	Nested(ctx context.Context, o Outer) error
	DeepUnexported(ctx context.Context) (Wrapper, error)
}

type local struct{ X int }

// Outer reaches a channel through a slice of structs.
type Outer struct {
	Name  string
	Items []Inner
}

type Inner struct {
	N int
	C chan int
}

// Wrapper reaches an unexported type through a map.
type Wrapper struct {
	M map[string]local
}
