package codegen

import (
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestMethodNameErrors checks the rules of wire names: the
// //granary:method directive, unique wire names and the parameter limit
// of grain's helpers, each reported as "file:line: reason".
func TestMethodNameErrors(t *testing.T) {
	tmp := moduleTempDir(t)
	src := `package wire

import "context"

//granary:grain
type Names interface {
	A(ctx context.Context) error //granary:method name=B
	B(ctx context.Context) error
	C(ctx context.Context) error //granary:method name=$reminder
	D(ctx context.Context) error //granary:method
	E(ctx context.Context) error //granary:method label=x
	Nine(ctx context.Context, a, b, c, d, e, f, g, h, i int) error
	Eight(ctx context.Context, a, b, c, d, e, f, g, h int) error
}

//granary:method name=X
type Misplaced interface{}
`
	writeFiles(t, tmp, map[string]string{"wire/wire.go": src})
	_, err := Generate(t.Context(), nil, tmp+"/...")
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("Generate returned %v, want an ErrorList", err)
	}
	path := filepath.Join(tmp, "wire", "wire.go")
	tests := []struct{ marker, want string }{
		{"\tB(ctx", `Names.B: wire name "B" is also the wire name of A at wire.go:7`},
		{"name=$reminder", `invalid name "$reminder": '$' starts the names reserved for the runtime's methods`},
		{"//granary:method\n", "//granary:method: want name=<wire name>"},
		{"label=x", `unknown option "label=x"`},
		{"i int", "Names.Nine: at most 8 parameters besides the context are supported: pass a struct"},
		{"//granary:method name=X", "//granary:method applies to methods of a grain interface, not to types"},
	}
	found := make([]bool, len(list))
	for _, tt := range tests {
		prefix := path + ":" + strconv.Itoa(lineOf(t, path, tt.marker)) + ": "
		ok := false
		for i, e := range list {
			if strings.HasPrefix(e.Error(), prefix) && strings.Contains(e.Msg, tt.want) {
				found[i], ok = true, true
			}
		}
		if !ok {
			t.Errorf("no error %s...%s\ngot:\n%v", prefix, tt.want, list)
		}
	}
	for i, e := range list {
		if !found[i] {
			t.Errorf("unexpected error: %v", e)
		}
	}
}
