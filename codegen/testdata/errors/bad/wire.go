package bad

import (
	"context"
	"sync"
	"time"
)

// Wire holds one method per rule of what crosses the wire (check.go's
// wireProblem): the methods marked "fine" must produce no error.
//
//granary:grain
type Wire interface {
	// Unexported fields.
	EventParam(ctx context.Context, e Event) error
	BatchResult(ctx context.Context) (Batch, error)
	AnonStruct(ctx context.Context, v struct{ a, B int }) error
	GenericPair(ctx context.Context, p Pair[int]) error
	MutexField(ctx context.Context, g Guarded) error
	TimeLocation(ctx context.Context, loc *time.Location) error
	OptedOut(ctx context.Context, o OptOut) (OptOut, error) // fine

	// Embedded structs.
	EmbedValue(ctx context.Context, e EmbedsValue) error // fine
	EmbedHidden(ctx context.Context, e EmbedsHidden) error
	EmbedPointer(ctx context.Context, e EmbedsPointer) error
	EmbedName(ctx context.Context, e EmbedsName) error
	EmbedSkipped(ctx context.Context, e EmbedsSkipped) error // fine
	EmbedBasic(ctx context.Context, e EmbedsBasic) error
	EmbedCoded(ctx context.Context, e EmbedsCoded) error
	EmbedError(ctx context.Context, e EmbedsError) error
	EmbedTime(ctx context.Context, s Stamped) error
	EmbedTimeAlone(ctx context.Context, i Instant) (Instant, error) // fine

	// Two fields under one key.
	TagClash(ctx context.Context, d Dup) error
	InlineClash(ctx context.Context, s Shadow) error
	DeepClash(ctx context.Context) (Outer2, error)
	EmbeddedClash(ctx context.Context, s Shadowed) error // fine: not inlined

	// Types msgpack cannot encode.
	Uintptr(ctx context.Context, u uintptr) error
	UintptrField(ctx context.Context) (Handle, error)

	// Recursive types.
	List(ctx context.Context, l *ListNode) error
	Tree(ctx context.Context) (TreeNode, error)
	Mutual(ctx context.Context, p Ping) error
	RecursiveInMap(ctx context.Context, m map[string]ListNode) error
	CodedList(ctx context.Context, l CodedList) error // fine: it encodes itself

	// Types that encode themselves.
	Opaque(ctx context.Context, o Opaque, ps []Opaque, m map[Opaque]Opaque) error                // fine
	PtrCodedValue(ctx context.Context, p PtrCoded, ps []PtrCoded, pm map[string]*PtrCoded) error // fine
	PtrCodedInMap(ctx context.Context, m map[string]PtrCoded) error
	PtrCodedKey(ctx context.Context, m map[PtrCoded]int) error
	PtrCodedDeepInMap(ctx context.Context, m map[string][2]Bundle) error
}

// Event loses its name on the wire.
type Event struct {
	name  string
	Count int
}

// Batch reaches Event through a slice.
type Batch struct{ Events []Event }

// Pair is generic.
type Pair[T any] struct {
	First  T
	second T
}

// Guarded holds a sync.Mutex, whose fields are unexported.
type Guarded struct {
	Mu sync.Mutex
	N  int
}

// OptOut leaves its unexported fields out on purpose.
type OptOut struct {
	_msgpack struct{} `msgpack:",as_array"`
	_        [4]byte
	cache    map[string]int `msgpack:"-"`
	mu       sync.Mutex     `msgpack:"-,omitempty"`
	N        int
}

type inner struct{ A, B int }

type hidden struct{ a int }

type label string

// EmbedsValue embeds an unexported struct with exported fields: msgpack
// inlines them.
type EmbedsValue struct {
	inner
	C int
}

// EmbedsHidden embeds an unexported struct whose field is unexported.
type EmbedsHidden struct {
	hidden
	C int
}

// EmbedsPointer embeds a pointer to an unexported struct, which msgpack
// cannot allocate when decoding.
type EmbedsPointer struct {
	*inner
	C int
}

// EmbedsName embeds an unexported string type.
type EmbedsName struct {
	label
	C int
}

// EmbedsSkipped leaves its embedded pointer out on purpose.
type EmbedsSkipped struct {
	*inner `msgpack:"-"`
	C      int
}

// EmbedsBasic embeds a predeclared type, whose name is unexported.
type EmbedsBasic struct {
	int
	C int
}

// EmbedsCoded embeds an unexported type that encodes itself.
type EmbedsCoded struct {
	coded
	C int
}

type coded struct{ n int }

func (c coded) MarshalBinary() ([]byte, error) { return nil, nil }
func (c *coded) UnmarshalBinary([]byte) error  { return nil }

// Stamped embeds time.Time, whose encoding methods it gets: msgpack would
// encode the time alone, without Note.
type Stamped struct {
	time.Time
	Note string
}

// Instant embeds time.Time and holds nothing else.
type Instant struct {
	time.Time
	_ [0]int
}

// Dup has two fields encoded as "A".
type Dup struct {
	A int
	B int `msgpack:"A"`
}

type Coords struct{ X, Y int }

// Shadow inlines Coords, whose X msgpack would drop.
type Shadow struct {
	X      int
	Coords `msgpack:",inline"`
}

// Outer2 reaches a clash inside an inlined struct.
type Outer2 struct {
	Coords
	Z Inner2
}

type Inner2 struct {
	Name  string `msgpack:"n"`
	Other string `msgpack:"n"`
}

// Shadowed embeds Coords, whose X clashes with its own: msgpack encodes
// Coords as one field instead of inlining it.
type Shadowed struct {
	X int
	Coords
}

// EmbedsError embeds an interface.
type EmbedsError struct {
	error
	C int
}

// Handle holds a uintptr.
type Handle struct{ H uintptr }

// ListNode is a linked list.
type ListNode struct {
	V    int
	Next *ListNode
}

// TreeNode is a tree.
type TreeNode struct {
	V    int
	Kids []TreeNode
}

// Ping and Pong refer to each other.
type Ping struct{ P *Pong }

type Pong struct{ P map[string]Ping }

// CodedList is recursive but encodes itself.
type CodedList struct {
	V    int
	Next *CodedList
}

func (l CodedList) MarshalBinary() ([]byte, error) { return nil, nil }
func (l *CodedList) UnmarshalBinary([]byte) error  { return nil }

// Opaque encodes itself (value receiver): its unexported field is its
// own business.
type Opaque struct{ secret string }

func (o Opaque) EncodeMsgpack(any) error  { return nil }
func (o *Opaque) DecodeMsgpack(any) error { return nil }

// PtrCoded encodes itself through pointer methods only.
type PtrCoded struct{ n int }

func (p *PtrCoded) MarshalText() ([]byte, error) { return nil, nil }
func (p *PtrCoded) UnmarshalText([]byte) error   { return nil }

// Bundle holds a PtrCoded by value.
type Bundle struct{ P PtrCoded }
