package codegen

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/tools/go/packages"
)

// TestStaleOutputs checks that earlier outputs, however broken, never
// prevent regeneration: a generated file that no longer parses, one with
// another package clause, one that no longer type-checks against the
// interface, and code elsewhere in the package that uses the generated API.
// An orphaned output is removed; files not written by the generator and
// outputs of files excluded by build constraints are left alone.
func TestStaleOutputs(t *testing.T) {
	dir := moduleTempDir(t)
	const header = Header + "\n\n"
	files := map[string]string{
		"a.go": `package p

import "context"

//granary:grain
type A interface {
	Hello(ctx context.Context, name string) (string, error)
}
`,
		"a_granary.go": header + "package p\n\nfunc {{{ <<<<<<< HEAD\n",
		"b.go": `package p

import "context"

//granary:grain
type B interface {
	Ping(ctx context.Context) error
}
`,
		"b_granary.go": header + "package renamed\n\nvar BType = 1\n",
		"c.go": `package p

import "context"

//granary:grain
type C interface {
	Now(ctx context.Context, n int) (int, error)
}
`,
		// Valid syntax, but generated for an older C.
		"c_granary.go": header + `package p

import "context"

type CRef struct{}

var _ C = CRef{}

func (CRef) Old(ctx context.Context) error { return nil }

var ARef = "duplicate"

func use(c C) { c.Old(nil) }
`,
		// Code of the package that uses the generated API.
		"use.go": `package p

import "github.com/granary-rt/granary/grain"

func Use(c grain.Caller, r grain.Registry) {
	_ = NewARef(c, "k")
	_ = NewCRef(c, "k").ID()
	RegisterB(r, nil)
}
`,
		"old_granary.go":     header + "package p\n\nthis is not Go\n",
		"notmine_granary.go": "package p\n\n// Not the generator's: no header.\nvar notMine = 1\n",
		"gone.go":            "//go:build never\n\npackage p\n",
		"gone_granary.go":    header + "package p\n",
	}
	writeFiles(t, dir, files)

	got, err := Generate(t.Context(), nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	var written, removed []string
	for _, f := range got {
		if f.Orphan() {
			removed = append(removed, filepath.Base(f.Path))
		} else {
			written = append(written, filepath.Base(f.Path))
		}
		if _, err := f.Write(); err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"a_granary.go", "b_granary.go", "c_granary.go"}; !slices.Equal(written, want) {
		t.Errorf("written %v, want %v", written, want)
	}
	if want := []string{"old_granary.go"}; !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	for _, name := range []string{"notmine_granary.go", "gone_granary.go"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(data) != files[name] {
			t.Errorf("%s was changed (err %v)", name, err)
		}
	}

	// The package now type-checks, generated files included, and a second
	// run finds nothing stale.
	pkgs, err := packages.Load(&packages.Config{Context: t.Context(), Mode: loadMode}, dir)
	if err != nil {
		t.Fatal(err)
	}
	packages.Visit(pkgs, nil, func(p *packages.Package) {
		for _, e := range p.Errors {
			t.Errorf("after regeneration: %v", e)
		}
	})
	again, err := Generate(t.Context(), nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range again {
		if stale, err := f.Stale(); err != nil || stale {
			t.Errorf("%s is stale after regeneration (err %v)", f.Path, err)
		}
	}
}
