package codegen

import (
	"go/types"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// GrainPath is the import path of the package generated code targets.
const GrainPath = "github.com/granary-rt/granary/grain"

// imports decides the imports of one generated file and how the file names
// the imported packages.
type imports struct {
	own   *types.Package
	names map[string]string // import path -> name in the file
	pkgs  []importSpec      // sorted by path
}

type importSpec struct {
	path string
	name string // name in the file
	decl string // name the package declares
}

// newImports collects the packages that the types of src's grain
// interfaces refer to, plus context and grain, and names them: each
// package by its own name unless that collides with a package-level
// identifier (including generated ones), a predeclared identifier or an
// earlier import, in which case a number is appended (time2). Packages are
// named in a fixed order (context, grain, then by import path), so the
// result is deterministic.
func newImports(gp *grainPackage, src *sourceFile) *imports {
	im := &imports{own: gp.types, names: map[string]string{}}
	declared := map[string]string{"context": "context", GrainPath: "grain"}
	record := func(p *types.Package) string {
		if p.Path() != gp.types.Path() {
			declared[p.Path()] = p.Name()
		}
		return p.Name()
	}
	for _, t := range src.grains {
		for _, m := range t.methods {
			for _, p := range m.params {
				types.TypeString(p.typ, record)
			}
			if m.result != nil {
				types.TypeString(m.result, record)
			}
		}
	}

	paths := make([]string, 0, len(declared))
	for path := range declared {
		if path != "context" && path != GrainPath {
			paths = append(paths, path)
		}
	}
	slices.Sort(paths)
	paths = append([]string{"context", GrainPath}, paths...)

	used := map[string]bool{}
	for _, path := range paths {
		base := declared[path]
		name := base
		for i := 2; gp.scope[name] || types.Universe.Lookup(name) != nil || used[name]; i++ {
			name = base + strconv.Itoa(i)
		}
		used[name] = true
		im.names[path] = name
		im.pkgs = append(im.pkgs, importSpec{path: path, name: name, decl: base})
	}
	slices.SortFunc(im.pkgs, func(a, b importSpec) int { return strings.Compare(a.path, b.path) })
	return im
}

// qualifier names packages in type expressions of the file.
func (im *imports) qualifier(p *types.Package) string {
	if p.Path() == im.own.Path() {
		return ""
	}
	return im.names[p.Path()]
}

// typeString prints t as the generated file spells it.
func (im *imports) typeString(t types.Type) string { return types.TypeString(t, im.qualifier) }

// context and grain return the names of those packages in the file.
func (im *imports) context() string { return im.names["context"] }
func (im *imports) grain() string   { return im.names[GrainPath] }

// block returns the import declaration: standard library first, then the
// rest, each group sorted by path.
func (im *imports) block() string {
	var std, other []string
	for _, s := range im.pkgs {
		line := strconv.Quote(s.path)
		if s.name != s.decl {
			line = s.name + " " + line
		}
		if isStd(s.path) {
			std = append(std, line)
		} else {
			other = append(other, line)
		}
	}
	var b strings.Builder
	b.WriteString("import (\n")
	for _, l := range std {
		b.WriteString("\t" + l + "\n")
	}
	if len(std) > 0 && len(other) > 0 {
		b.WriteString("\n")
	}
	for _, l := range other {
		b.WriteString("\t" + l + "\n")
	}
	b.WriteString(")\n")
	return b.String()
}

// isStd reports whether path looks like a standard library package: its
// first element has no dot.
func isStd(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

var identRE = regexp.MustCompile(`[\p{L}_][\p{L}\p{Nd}_]*`)

// identsIn returns the identifiers in a printed type expression: those a
// local name in generated code must not shadow.
func identsIn(s string) []string { return identRE.FindAllString(s, -1) }
