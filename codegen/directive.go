package codegen

import (
	"go/ast"
	"go/build"
	"go/token"
	"path/filepath"
	"strings"
)

// directivePrefix starts every generator directive. Like //go: directives
// it has no space after the slashes.
const directivePrefix = "//granary:"

// Directive names.
const (
	dirGrain      = "grain"
	dirReadOnly   = "readonly"
	dirOneWay     = "oneway"
	dirInterleave = "interleave"
	dirMethod     = "method"
)

// directive is one //granary:name arg... comment line.
type directive struct {
	pos  token.Pos
	name string
	args []string
}

// directives returns the //granary: lines of the comment groups, in order.
func directives(groups ...*ast.CommentGroup) []directive {
	var ds []directive
	for _, g := range groups {
		if g == nil {
			continue
		}
		for _, c := range g.List {
			rest, ok := strings.CutPrefix(c.Text, directivePrefix)
			if !ok {
				continue
			}
			d := directive{pos: c.Pos()}
			if f := strings.Fields(rest); len(f) > 0 {
				d.name, d.args = f[0], f[1:]
			}
			ds = append(ds, d)
		}
	}
	return ds
}

// typeDoc returns the doc comment of a type spec: its own, or for an
// ungrouped declaration ("type X interface{...}") the declaration's.
func typeDoc(decl *ast.GenDecl, spec *ast.TypeSpec) *ast.CommentGroup {
	if spec.Doc != nil {
		return spec.Doc
	}
	if !decl.Lparen.IsValid() {
		return decl.Doc
	}
	return nil
}

// hasBuildConstraint reports whether f has a //go:build or // +build line
// before its package clause.
func hasBuildConstraint(f *ast.File) bool {
	for _, g := range f.Comments {
		if g.Pos() >= f.Package {
			break
		}
		for _, c := range g.List {
			if strings.HasPrefix(c.Text, "//go:build") || strings.HasPrefix(c.Text, "// +build") {
				return true
			}
		}
	}
	return false
}

// hasFileNameConstraint reports whether the name of the Go file at path
// restricts it to some GOOS or GOARCH (account_linux.go). The generated
// file's name (account_linux_granary.go) would not.
func hasFileNameConstraint(path string) bool {
	ctxt := build.Default
	ctxt.GOOS, ctxt.GOARCH = "granarynone", "granarynone"
	ctxt.BuildTags, ctxt.ToolTags, ctxt.ReleaseTags = nil, nil, nil
	ctxt.CgoEnabled = true
	match, err := ctxt.MatchFile(filepath.Dir(path), filepath.Base(path))
	return err == nil && !match
}
