package bad

import (
	"context"
	"io"

	"github.com/granary-rt/granary/grain"
)

//granary:grain
type NotAnInterface struct{}

//granary:grain
type Generic[T any] interface {
	M(ctx context.Context, t T) error
}

//granary:grain
type unexportedGrain interface {
	M(ctx context.Context) error
}

//granary:grain
type Alias = interface {
	M(ctx context.Context) error
}

//granary:grain
type Empty interface{}

//granary:grain
type Embeds interface {
	io.Closer
	M(ctx context.Context) error
}

//granary:grain
type Undefined interface {
	M(ctx context.Context, m Missing) error
}

//granary:grain
type Conflict interface {
	M(ctx context.Context) error
}

// ConflictRef is declared by hand: the generator would declare it too.
type ConflictRef struct{}

// Valid grain interfaces in a package with invalid ones produce no error.
//
//granary:grain
type Valid interface {
	Plain(ctx context.Context, h Hidden, s Skipped, c Custom) error
}

// Hidden has an unexported channel msgpack is told to skip.
type Hidden struct {
	X int
	c chan int `msgpack:"-"`
}

// Skipped has a function msgpack is told to skip.
type Skipped struct {
	X int
	F func() `msgpack:"-"`
}

// Custom encodes itself.
type Custom struct{ f func() }

func (c Custom) MarshalText() ([]byte, error)  { return nil, nil }
func (c *Custom) UnmarshalText(b []byte) error { return nil }

// References to grains do not cross the wire (yet).
//
//granary:grain
type Refs interface {
	Raw(ctx context.Context, r grain.Ref) error
	Typed(ctx context.Context) (*FriendRef, error)
	InStruct(ctx context.Context, h Holder) error
}

// FriendRef looks like a generated reference.
type FriendRef struct{ ref grain.Ref }

// Holder holds a reference.
type Holder struct {
	Friend FriendRef
}
