package codegen

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"time"

	"golang.org/x/tools/go/packages"
)

// Observer interfaces: //granary:observer marks an interface whose
// implementations live outside the grain model (a client's object, or one
// a grain made) and that grains call back. Every method is one-way: it
// returns only an error, and the caller learns only that the call was
// accepted for delivery. The generator writes, for an observer interface
// X:
//   - XType, its grain.TypeDesc (the dispatcher of the local object);
//   - XRef, a typed reference: a plain struct (grain.ObserverRef
//     embedded) that encodes with msgpack, so that it can be passed to a
//     grain and kept in its state; XRef.Bind(c) returns an X that calls
//     the observer through c (a grain's Context);
//   - NewXRef(ctx, h, obj), which makes obj callable through a
//     grain.ObserverHost (a runtime.Client, a grain's Context) and returns
//     its reference and the handle that deletes it.

// dirObserver marks an observer interface.
const dirObserver = "observer"

// stubType is the unexported type XRef.Bind returns.
func (t *grainType) stubType() string { return t.lower + "Stub" }

// observerMethod applies the rules of observer interfaces to m: one-way
// (only an error result), no //granary:readonly or //granary:interleave.
func (g *generator) observerMethod(t *grainType, m *method, ident *ast.Ident, resultPos []token.Pos, nresults int) {
	where := t.name + "." + ident.Name
	if nresults == 2 {
		g.sink.invalid(resultPos[0], "%s: methods of a %s%s interface are one-way and must return only error", where, directivePrefix, dirObserver)
	}
	for _, d := range []struct {
		set  bool
		name string
	}{{m.readOnly, dirReadOnly}, {m.interleave, dirInterleave}} {
		if d.set {
			g.sink.invalid(ident.Pos(), "%s: %s%s does not apply to methods of a %s%s interface: observer calls run outside grain turns",
				where, directivePrefix, d.name, directivePrefix, dirObserver)
		}
	}
	m.oneWay = true
}

// observerType writes the declarations of one observer interface.
func (r *renderer) observerType() {
	t, gr, ctx := r.t, r.im.grain(), r.im.context()

	r.p("// %s describes the %s observer interface: its registered name\n", t.typeVar(), t.name)
	r.p("// and methods, all one-way. Calls address a method by its wire name and the\n")
	r.p("// fingerprint of its parameter types, never by its position.\n")
	r.descriptors()

	ref, stub := t.refType(), t.stubType()
	r.p("// %s is a reference to an object implementing %s, made callable\n", ref, t.name)
	r.p("// with %s. It is a plain value: pass it to a grain, keep it in a\n", t.newRefFunc())
	r.p("// grain's state. A grain calls it with Bind.\n")
	r.p("type %s struct{ %s.ObserverRef }\n\n", ref, gr)
	r.p("// %s makes obj callable as a %s through h (a runtime.Client, or a\n", t.newRefFunc(), t.name)
	r.p("// grain's %s.Context) and returns its reference and the handle that deletes it.\n", gr)
	r.p("func %s(ctx %s.Context, h %s.ObserverHost, obj %s) (%s, %s.ObserverHandle, error) {\n", t.newRefFunc(), ctx, gr, t.name, ref, gr)
	r.p("o, err := %s.NewObserverRef(ctx, h, %s, obj)\n", gr, t.typeVar())
	r.p("if err != nil {\nreturn %s{}, nil, err\n}\n", ref)
	r.p("return %s{o.Ref()}, o, nil\n}\n\n", ref)

	recv, names := r.names()
	r.p("// Bind returns the %s that calls the referenced observer through c (a\n", t.name)
	r.p("// grain's %s.Context). Its calls are one-way: a nil error means the\n", gr)
	r.p("// observer's silo accepted the call for delivery (see %s.ObserverCaller);\n", gr)
	r.p("// an observer that is gone fails with %s.ErrObserverGone.\n", gr)
	r.p("func (%s %s) Bind(c %s.Caller) %s { return %s{c: c, ref: %s.ObserverRef} }\n\n", recv, ref, gr, t.name, stub, recv)
	r.p("// %s calls an observer through a Caller.\n", stub)
	r.p("type %s struct {\nc %s.Caller\nref %s.ObserverRef\n}\n\n", stub, gr, gr)
	r.p("var _ %s = %s{}\n\n", t.name, stub)
	for i, m := range t.methods {
		n := names[i]
		sig := []string{n.ctx + " " + ctx + ".Context"}
		types := make([]string, len(m.params))
		fields := make([]string, len(m.params))
		for j, prm := range m.params {
			types[j] = r.im.typeString(prm.typ)
			sig = append(sig, n.params[j]+" "+types[j])
			fields[j] = fmt.Sprintf("V%d: %s", j, n.params[j])
		}
		tuple := fmt.Sprintf("%s.Args%d", gr, len(m.params))
		if len(types) > 0 {
			tuple += "[" + strings.Join(types, ", ") + "]"
		}
		r.p("func (%s %s) %s(%s) error {\n", recv, stub, m.name, strings.Join(sig, ", "))
		r.p("return %s.InvokeObserver(%s, %s.c, %s.ref, %s, %s.Desc(), &%s{%s})\n}\n\n",
			gr, n.ctx, recv, recv, t.typeVar(), m.varName, tuple, strings.Join(fields, ", "))
	}
}

// writeObserverStubs writes, next to every Go file of the listed packages
// that declares observer interfaces, a stand-in for its generated file
// that declares only their references (type XRef struct{
// grain.ObserverRef }), and returns the function that removes them
// (idempotent). Loaded in place of the generated file (hidden as always),
// a stub lets the package's grain interfaces take and return XRef before
// XRef was ever generated. The stubs are real files, not overlays:
// go/packages reads files itself, and its own overlays make it
// type-check every dependency from source. Their names end in
// GeneratedSuffix, so a stub left behind by a generator that was killed
// is hidden from the next load and removed as an orphan. A file that does
// not parse gets no stub: the load reports it.
func writeObserverStubs(listed []*packages.Package) (remove func(), err error) {
	var written []string
	remove = func() {
		for _, name := range written {
			os.Remove(name)
		}
		written = nil
	}
	fset := token.NewFileSet()
	for _, p := range listed {
		for _, path := range p.GoFiles {
			if strings.HasSuffix(path, GeneratedSuffix) {
				continue
			}
			f, err := parser.ParseFile(fset, path, nil, parser.ParseComments|parser.SkipObjectResolution)
			if err != nil {
				continue
			}
			var refs []string
			for _, decl := range f.Decls {
				decl, ok := decl.(*ast.GenDecl)
				if !ok || decl.Tok != token.TYPE {
					continue
				}
				for _, spec := range decl.Specs {
					spec := spec.(*ast.TypeSpec)
					for _, d := range directives(typeDoc(decl, spec), spec.Comment) {
						if d.name == dirObserver {
							refs = append(refs, spec.Name.Name+"Ref")
							break
						}
					}
				}
			}
			if len(refs) == 0 {
				continue
			}
			var b strings.Builder
			fmt.Fprintf(&b, "%s\n\n// A stand-in while granary-gen runs.\n\npackage %s\n\nimport %s %q\n\n", Header, f.Name.Name, stubGrainImport, GrainPath)
			for _, ref := range refs {
				fmt.Fprintf(&b, "type %s struct{ %s.ObserverRef }\n\n", ref, stubGrainImport)
			}
			// A name of its own: one a killed run left is hidden.
			name := fmt.Sprintf("%s%s%d%s", strings.TrimSuffix(path, ".go"), stubInfix, time.Now().UnixNano(), GeneratedSuffix)
			if err := os.WriteFile(name, []byte(b.String()), 0o666); err != nil {
				remove()
				return func() {}, fmt.Errorf("codegen: write the stand-in for %s's observer references: %w", path, err)
			}
			written = append(written, name)
		}
	}
	return remove, nil
}

// stubInfix marks the name of a stub: account.granarystub<n>_granary.go.
const stubInfix = ".granarystub"

// stubGrainImport is the name under which a stub imports package grain:
// one no package declares.
const stubGrainImport = "granary_grain_stub"

// isStub reports whether path is that of a generated file: while loading,
// the declarations of one are a stub's (generated files are hidden).
func isStub(path string) bool { return strings.HasSuffix(path, GeneratedSuffix) }
