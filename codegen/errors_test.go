package codegen

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestErrors generates for the packages under testdata/errors, in one
// load, and checks that every rule violation is reported as
// "file:line: reason" at the line of the offending declaration, method or
// parameter, and that nothing else is reported.
func TestErrors(t *testing.T) {
	tests := []struct {
		file   string // under testdata/errors
		marker string // text on the offending line (its first occurrence)
		want   string // substring of the message
	}{
		// Signatures.
		{"bad/signatures.go", "NoParams()", "Signatures.NoParams: first parameter must be context.Context"},
		{"bad/signatures.go", "NotContext(s string)", "first parameter must be context.Context, not string"},
		{"bad/signatures.go", "NoResults(", "NoResults: last result must be error"},
		{"bad/signatures.go", "NotError(", "last result must be error, not int"},
		{"bad/signatures.go", "TwoResults(", "at most one result besides error"},
		{"bad/signatures.go", "Variadic(", "variadic parameter xs is not supported"},
		{"bad/signatures.go", "OneWayResult(", "OneWayResult: a //granary:oneway method must return only error"},
		{"bad/signatures.go", "lowercase(", "grain methods must be exported"},
		{"bad/signatures.go", "ID(ctx", "the method name ID is reserved"},

		// Types that cannot cross the wire.
		{"bad/signatures.go", "Chan(ctx", "parameter c: type chan int cannot cross the wire: chan int is a channel"},
		{"bad/signatures.go", "Func(ctx", "result: type func() cannot cross the wire: func() is a function"},
		{"bad/signatures.go", "Unsafe(ctx", "unsafe.Pointer cannot be encoded"},
		{"bad/signatures.go", "Any(ctx", "parameter v: type any cannot cross the wire: any is an interface"},
		{"bad/signatures.go", "Reader(ctx", "io.Reader is an interface"},
		{"bad/signatures.go", "ErrorParam(ctx", "parameter e: type error cannot cross the wire: error is an interface"},
		{"bad/signatures.go", "Complex(ctx", "complex128 is not supported by msgpack"},
		{"bad/signatures.go", "Unexported(ctx", "type local cannot cross the wire: local is unexported"},
		{"bad/signatures.go", "SliceOfChan(ctx", "chan int is a channel"},
		{"bad/signatures.go", "MapOfFunc(ctx", "func() is a function"},
		{"bad/signatures.go", "PtrAny(ctx", "any is an interface"},
		{"bad/signatures.go", "Nested(ctx", "chan int is a channel (in field Outer.Items, field Inner.C)"},
		{"bad/signatures.go", "DeepUnexported(ctx", "local is unexported (in field Wrapper.M)"},

		// What msgpack would drop or could not decode (wire.go); the
		// methods there without a case here must not be reported.
		{"bad/wire.go", "EventParam(ctx", "parameter e: type Event cannot cross the wire: field Event.name is unexported: msgpack leaves unexported fields out, so it would arrive as its zero value: export it, or tag it `msgpack:\"-\"`"},
		{"bad/wire.go", "BatchResult(ctx", "result: type Batch cannot cross the wire: field Event.name is unexported (in field Batch.Events)"},
		{"bad/wire.go", "AnonStruct(ctx", "field a is unexported"},
		{"bad/wire.go", "GenericPair(ctx", "field Pair[int].second is unexported"},
		{"bad/wire.go", "MutexField(ctx", "field sync.Mutex.mu is unexported (in field Guarded.Mu): msgpack leaves unexported fields out, so it would arrive as its zero value: if the type is yours, export the field or tag it `msgpack:\"-\"`; otherwise tag the field that holds it `msgpack:\"-\"`, or send a type of your own"},
		{"bad/wire.go", "TimeLocation(ctx", "type *time.Location cannot cross the wire: field time.Location.name is unexported"},
		{"bad/wire.go", "EmbedHidden(ctx", "field hidden.a is unexported (in field EmbedsHidden.hidden)"},
		{"bad/wire.go", "EmbedPointer(ctx", "embedded *inner is a pointer to an unexported type (in field EmbedsPointer.inner): msgpack cannot allocate it when decoding"},
		{"bad/wire.go", "EmbedName(ctx", "embedded label is unexported and not a struct (in field EmbedsName.label): msgpack cannot set it when decoding"},
		{"bad/wire.go", "EmbedBasic(ctx", "embedded int is unexported and not a struct (in field EmbedsBasic.int)"},
		{"bad/wire.go", "EmbedCoded(ctx", "EmbedsCoded encodes itself with MarshalBinary promoted from its embedded field coded: msgpack would encode that field alone, and C would arrive as its zero value"},
		{"bad/wire.go", "EmbedTime(ctx", "type Stamped cannot cross the wire: Stamped encodes itself with MarshalBinary promoted from its embedded field Time: msgpack would encode that field alone, and Note would arrive as its zero value: make Time a named field, or give Stamped its own encoding methods"},
		{"bad/wire.go", "EmbedError(ctx", "error is an interface (in field EmbedsError.error): msgpack would decode it as generic maps"},
		{"bad/wire.go", "TagClash(ctx", "type Dup cannot cross the wire: fields Dup.A and Dup.B are both encoded as \"A\": msgpack would decode both from one key"},
		{"bad/wire.go", "InlineClash(ctx", "fields Shadow.X and Shadow.Coords.X are both encoded as \"X\""},
		{"bad/wire.go", "DeepClash(ctx", "fields Inner2.Name and Inner2.Other are both encoded as \"n\" (in field Outer2.Z)"},
		{"bad/wire.go", "Uintptr(ctx", "parameter u: type uintptr cannot cross the wire: uintptr is not supported by msgpack: its encoder panics"},
		{"bad/wire.go", "UintptrField(ctx", "uintptr is not supported by msgpack (in field Handle.H)"},
		{"bad/wire.go", "\tList(ctx", "type *ListNode cannot cross the wire: ListNode refers to itself (in field ListNode.Next): msgpack does not detect cycles"},
		{"bad/wire.go", "Tree(ctx", "TreeNode refers to itself (in field TreeNode.Kids)"},
		{"bad/wire.go", "Mutual(ctx", "Ping refers to itself (in field Ping.P, field Pong.P)"},
		{"bad/wire.go", "RecursiveInMap(ctx", "ListNode refers to itself (in field ListNode.Next)"},
		{"bad/wire.go", "PtrCodedInMap(ctx", "PtrCoded encodes itself only through methods of *PtrCoded: msgpack cannot call them on a map key or value"},
		{"bad/wire.go", "PtrCodedKey(ctx", "PtrCoded encodes itself only through methods of *PtrCoded"},
		{"bad/wire.go", "PtrCodedDeepInMap(ctx", "PtrCoded encodes itself only through methods of *PtrCoded (in field Bundle.P)"},

		// Directives.
		{"bad/directives.go", "//granary:fast", "unknown directive //granary:fast"},
		{"bad/directives.go", "//granary:readonly please", "//granary:readonly takes no arguments"},
		{"bad/directives.go", "//granary:interleave always", "//granary:interleave takes no arguments"},
		{"bad/directives.go", "\t//granary:grain", "//granary:grain applies to interface types, not to methods"},
		{"bad/directives.go", "name=has/slash", `invalid name "has/slash": contains a slash`},
		{"bad/directives.go", "color=blue", `unknown option "color=blue"`},
		{"bad/directives.go", "//granary:readonly\n", "applies to methods of a grain interface, not to types"},
		{"bad/directives.go", "type DupB", `grain type name "bad.Dup" is also used by the grain interface at directives.go:31`},
		{"bad/directives.go", "//granary:grain\ntype (", "misplaced directive //granary:grain"},
		{"bad/directives.go", "//granary:oneway\nfunc", "misplaced directive //granary:oneway"},
		{"bad/directives.go", "error //granary:readonly\n}", "misplaced directive //granary:readonly"},

		// Declarations.
		{"bad/declarations.go", "type NotAnInterface", "marks NotAnInterface, which is not an interface type"},
		{"bad/declarations.go", "type Generic", "must not have type parameters"},
		{"bad/declarations.go", "type unexportedGrain", "grain interface unexportedGrain must be exported"},
		{"bad/declarations.go", "type Alias", "must be a defined type, not an alias"},
		{"bad/declarations.go", "type Empty", "grain interface Empty has no methods"},
		{"bad/declarations.go", "io.Closer", "Embeds: embedded io.Closer is not supported"},
		{"bad/declarations.go", "m Missing", "undefined: Missing"},
		{"bad/declarations.go", "type Conflict interface", "generated identifier ConflictRef conflicts with ConflictRef declared at"},
		{"bad/declarations.go", "Raw(ctx", "grain.Ref is a grain reference, which msgpack would encode as nothing"},
		{"bad/declarations.go", "Typed(ctx", "FriendRef is a grain reference"},
		{"bad/declarations.go", "InStruct(ctx", "FriendRef is a grain reference, which msgpack would encode as nothing: pass the grain's key or grain.ID instead (in field Holder.Friend)"},
		{"bad/constrained.go", "type Constrained", "declared in a file with build constraints"},
		{"$TMP/osname/grain_" + runtime.GOOS + ".go", "type OSName", "declared in a file with build constraints"},

		// A package that does not parse (written by the test: gofmt
		// would complain about a checked-in file).
		{"$TMP/syntax/syntax.go", "func oops(", "expected ')', found '{'"},
	}

	tmp := moduleTempDir(t)
	writeFiles(t, tmp, map[string]string{"osname/grain_" + runtime.GOOS + ".go": `package osname

import "context"

//granary:grain
type OSName interface {
	M(ctx context.Context) error
}
`, "syntax/syntax.go": `package syntax

import "context"

//granary:grain
type Broken interface {
	M(ctx context.Context) error
}

func oops( {
}
`})
	_, err := Generate(t.Context(), nil, "./testdata/errors/...", tmp+"/...")
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("Generate returned %v, want an ErrorList", err)
	}

	found := make([]bool, len(list))
	for _, tt := range tests {
		path, err := filepath.Abs(filepath.Join("testdata/errors", tt.file))
		if rest, ok := strings.CutPrefix(tt.file, "$TMP/"); ok {
			path = filepath.Join(tmp, rest)
		}
		if err != nil {
			t.Fatal(err)
		}
		line := lineOf(t, path, tt.marker)
		prefix := fmt.Sprintf("%s:%d: ", path, line)
		ok := false
		for i, e := range list {
			if strings.HasPrefix(e.Error(), prefix) && strings.Contains(e.Msg, tt.want) {
				found[i], ok = true, true
			}
		}
		if !ok {
			t.Errorf("no error %s...%s\ngot:\n%v", tt.file+prefix[len(path):], tt.want, list)
		}
	}
	for i, e := range list {
		if !found[i] {
			t.Errorf("unexpected error: %v", e)
		}
		if strings.HasSuffix(e.Pos.Filename, "bad/"+filepath.Base(e.Pos.Filename)) && !errors.Is(e, ErrInvalid) {
			t.Errorf("%v: does not match ErrInvalid", e)
		}
	}
}

// lineOf returns the line of the first occurrence of marker in the file.
func lineOf(t *testing.T, path, marker string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(data), marker)
	if i < 0 {
		t.Fatalf("%s: marker %q not found", path, marker)
	}
	return strings.Count(string(data[:i]), "\n") + 1
}
