package bank

import (
	"context"
	"fmt"
	"time"

	"github.com/granary-rt/granary/grain"
)

// Wire echoes the common types of arguments and results, so that ../run
// can check that each arrives equal to what was sent: the grain records
// the arguments it received, and returns them.
//
//granary:grain
type Wire interface {
	Time(ctx context.Context, t time.Time) (time.Time, error)
	Duration(ctx context.Context, d time.Duration) (time.Duration, error)
	Bytes(ctx context.Context, b []byte) ([]byte, error)
	Ints(ctx context.Context, s []int) ([]int, error)
	Map(ctx context.Context, m map[string]int) (map[string]int, error)
	Pointer(ctx context.Context, p *int) (*int, error)
	Named(ctx context.Context, m Money, tags Tags, labels Labels, c Code) (Labels, error)
	Struct(ctx context.Context, p Point) (Point, error)
	Everything(ctx context.Context, v Everything) (Everything, error)
	EverythingPtr(ctx context.Context, v *Everything) (*Everything, error)
	Versions(ctx context.Context, v Version, vs []Version, arr [2]Version) (Version, error)
}

// Tags is a named slice type.
type Tags []string

// Labels is a named map type.
type Labels map[string]string

// Point is a small struct.
type Point struct{ X, Y int }

// Code encodes itself as text (with value receivers, so it may be a map
// key), which makes its unexported fields fine.
type Code struct{ major, minor byte }

// NewCode returns a code.
func NewCode(major, minor byte) Code { return Code{major, minor} }

func (c Code) MarshalText() ([]byte, error) { return fmt.Appendf(nil, "%d.%d", c.major, c.minor), nil }

func (c *Code) UnmarshalText(b []byte) error {
	_, err := fmt.Sscanf(string(b), "%d.%d", &c.major, &c.minor)
	return err
}

// Version encodes itself through pointer methods only: msgpack can call
// them because it reaches arguments, results, slice elements and array
// elements through pointers (the generator rejects it in a map).
type Version struct{ major, minor int }

// NewVersion returns a version.
func NewVersion(major, minor int) Version { return Version{major, minor} }

func (v *Version) MarshalText() ([]byte, error) {
	return fmt.Appendf(nil, "v%d.%d", v.major, v.minor), nil
}

func (v *Version) UnmarshalText(b []byte) error {
	_, err := fmt.Sscanf(string(b), "v%d.%d", &v.major, &v.minor)
	return err
}

// extra is embedded, unexported, in Everything: msgpack reaches its
// exported fields through it.
type extra struct{ Note string }

// Everything holds one field of each common kind.
type Everything struct {
	Bool    bool
	Int8    int8
	Int     int
	Uint64  uint64
	Float32 float32
	Float64 float64
	String  string

	At, Zero time.Time
	Every    time.Duration

	Bytes, NilBytes, EmptyBytes []byte
	Array                       [4]byte
	Grid                        [2][2]int

	Ints, NilInts, EmptyInts []int
	Map                      map[string]Point
	NilMap                   map[string]int
	EmptyMap                 map[int]string
	Nested                   map[string][]map[int]*Point

	Ptr, NilPtr *Point
	PtrPtr      **int
	Inner       Point
	Points      []Point
	PtrSlice    []*Point

	Money  Money
	Tags   Tags
	Labels Labels
	Code   Code
	Codes  map[Code]Code
	ID     grain.ID
	Entry  Entry

	Point // embedded, exported: its fields are inlined
	extra

	// Skipped is left out on purpose: it arrives empty.
	Skipped string `msgpack:"-"`
}
