package codegen

import (
	"fmt"
	"go/ast"
	"go/token"
	"go/types"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/tools/go/packages"
)

// grainPackage is what the generator found in one package.
type grainPackage struct {
	types *types.Package
	// scope holds every package-level identifier: the package's own
	// declarations and everything the generator declares in it. Import
	// names of generated files must not collide with them.
	scope   map[string]bool
	sources []*sourceFile
}

// sourceFile is a Go file declaring grain interfaces; it gets one output.
type sourceFile struct {
	path   string
	grains []*grainType
}

// grainType is one grain interface.
type grainType struct {
	name    string // Go name of the interface
	regName string // registered grain type name
	lower   string // lowerCamel name, prefix of the helper types
	methods []*method
}

// method is one method of a grain interface, in source order.
type method struct {
	name       string // Go name
	wireName   string // name on the wire: name, or //granary:method name=...
	readOnly   bool
	oneWay     bool
	interleave bool // //granary:interleave
	copyFree   bool
	ctxName    string   // name of the context parameter ("" or "_" if unnamed)
	params     []*param // parameters after the context
	result     types.Type
	varName    string // package-level variable holding the method's descriptor
}

// param is a parameter after the context.
type param struct {
	name string // as declared; "" or "_" if unnamed
	typ  types.Type
}

// Identifiers the generator declares for a grain interface X.
func (t *grainType) typeVar() string      { return t.name + "Type" }
func (t *grainType) refType() string      { return t.name + "Ref" }
func (t *grainType) newRefFunc() string   { return "New" + t.name + "Ref" }
func (t *grainType) registerFunc() string { return "Register" + t.name }

// declared returns every package-level identifier generated for t.
func (t *grainType) declared() []string {
	names := []string{t.typeVar(), t.refType(), t.newRefFunc(), t.registerFunc()}
	for _, m := range t.methods {
		names = append(names, m.varName)
	}
	return names
}

// findGrains finds and checks the grain interfaces of p. It returns nil if
// there are none or if any of them is invalid (problems are recorded).
func (g *generator) findGrains(p *packages.Package, typeErrs []packages.Error) *grainPackage {
	gp := &grainPackage{types: p.Types, scope: map[string]bool{}}
	g.names = map[string]token.Pos{}
	for _, name := range p.Types.Scope().Names() {
		gp.scope[name] = true
	}
	nerrs := len(g.sink.errs)
	// generated maps the identifiers generated so far to the interface
	// they were generated for.
	generated := map[string]token.Pos{}
	goFiles := map[string]bool{}
	for _, name := range p.GoFiles {
		goFiles[name] = true
	}
	for _, f := range p.Syntax {
		path := g.sink.fset.Position(f.Package).Filename
		if strings.HasSuffix(path, GeneratedSuffix) {
			continue
		}
		var src *sourceFile
		// Directives the declarations below account for; any other is
		// misplaced.
		consumed := map[token.Pos]bool{}
		var marked [][2]token.Pos
		for _, decl := range f.Decls {
			decl, ok := decl.(*ast.GenDecl)
			if !ok || decl.Tok != token.TYPE {
				continue
			}
			for _, spec := range decl.Specs {
				spec := spec.(*ast.TypeSpec)
				for _, d := range directives(typeDoc(decl, spec), spec.Comment) {
					consumed[d.pos] = true
				}
				t, isMarked := g.grainType(p, f, decl, spec, typeErrs)
				if isMarked {
					marked = append(marked, [2]token.Pos{spec.Pos(), spec.End()})
				}
				if t == nil {
					continue
				}
				if !goFiles[path] {
					g.sink.invalid(spec.Name.Pos(), "grain interface %s: cannot tell which file declares it (a file using cgo?); declare it in a plain Go file", t.name)
					continue
				}
				for _, name := range t.declared() {
					if obj := p.Types.Scope().Lookup(name); obj != nil {
						g.sink.invalid(spec.Name.Pos(), "generated identifier %s conflicts with %s declared at %s",
							name, name, g.sink.relPos(obj.Pos(), spec.Name.Pos()))
					}
					if other, dup := generated[name]; dup {
						g.sink.invalid(spec.Name.Pos(), "generated identifier %s is also generated for the grain interface at %s",
							name, g.sink.relPos(other, spec.Name.Pos()))
					}
					generated[name] = spec.Name.Pos()
					gp.scope[name] = true
				}
				if src == nil {
					src = &sourceFile{path: path}
					gp.sources = append(gp.sources, src)
				}
				src.grains = append(src.grains, t)
			}
		}
		g.misplaced(f, consumed, marked)
	}
	if len(gp.sources) == 0 || len(g.sink.errs) > nerrs {
		return nil
	}
	return gp
}

// misplaced reports the directives of f that are neither in the doc
// comment of a type nor inside a grain interface, and so would be ignored:
// on a grouped type declaration, a function or a method of an interface
// not marked //granary:grain, say.
func (g *generator) misplaced(f *ast.File, consumed map[token.Pos]bool, marked [][2]token.Pos) {
	for _, d := range directives(f.Comments...) {
		if consumed[d.pos] || slices.ContainsFunc(marked, func(r [2]token.Pos) bool { return r[0] <= d.pos && d.pos < r[1] }) {
			continue
		}
		g.sink.invalid(d.pos, "misplaced directive %s%s: directives go in the doc comment of an interface type (%s%s) or on a method of a grain interface",
			directivePrefix, d.name, directivePrefix, dirGrain)
	}
}

// grainType checks one type declaration and returns its grain interface,
// or nil if it is invalid or not one. marked reports whether the type is
// marked //granary:grain.
func (g *generator) grainType(p *packages.Package, f *ast.File, decl *ast.GenDecl, spec *ast.TypeSpec, typeErrs []packages.Error) (t *grainType, marked bool) {
	var (
		name  = p.Types.Name() + "." + spec.Name.Name
		nerrs = len(g.sink.errs)
	)
	for _, d := range directives(typeDoc(decl, spec), spec.Comment) {
		switch d.name {
		case dirGrain:
			if marked {
				g.sink.invalid(d.pos, "duplicate %s%s directive", directivePrefix, dirGrain)
			}
			marked = true
			for _, arg := range d.args {
				v, ok := strings.CutPrefix(arg, "name=")
				if !ok {
					g.sink.invalid(d.pos, "%s%s: unknown option %q (want name=<registered name>)", directivePrefix, dirGrain, arg)
					continue
				}
				if err := validGrainName(v); err != nil {
					g.sink.invalid(d.pos, "%s%s: invalid name %q: %v", directivePrefix, dirGrain, v, err)
					continue
				}
				name = v
			}
		case dirReadOnly, dirOneWay, dirInterleave, dirMethod:
			g.sink.invalid(d.pos, "%s%s applies to methods of a grain interface, not to types", directivePrefix, d.name)
		default:
			g.sink.invalid(d.pos, "unknown directive %s%s", directivePrefix, d.name)
		}
	}
	if !marked {
		return nil, false
	}

	iface, isIface := spec.Type.(*ast.InterfaceType)
	switch {
	case !isIface:
		g.sink.invalid(spec.Name.Pos(), "%s%s marks %s, which is not an interface type", directivePrefix, dirGrain, spec.Name.Name)
		return nil, true
	case spec.Assign.IsValid():
		g.sink.invalid(spec.Name.Pos(), "grain interface %s must be a defined type, not an alias", spec.Name.Name)
		return nil, true
	case spec.TypeParams != nil:
		g.sink.invalid(spec.Name.Pos(), "grain interface %s must not have type parameters", spec.Name.Name)
		return nil, true
	case !spec.Name.IsExported():
		g.sink.invalid(spec.Name.Pos(), "grain interface %s must be exported", spec.Name.Name)
		return nil, true
	case hasBuildConstraint(f) || hasFileNameConstraint(g.sink.fset.Position(f.Package).Filename):
		g.sink.invalid(spec.Name.Pos(), "grain interface %s is declared in a file with build constraints (a //go:build line or a _GOOS or _GOARCH file name suffix), which its generated file could not repeat; move it to a file without any", spec.Name.Name)
		return nil, true
	case len(iface.Methods.List) == 0:
		g.sink.invalid(spec.Name.Pos(), "grain interface %s has no methods", spec.Name.Name)
		return nil, true
	}
	if other, dup := g.names[name]; dup {
		g.sink.invalid(spec.Name.Pos(), "grain type name %q is also used by the grain interface at %s", name, g.sink.relPos(other, spec.Name.Pos()))
	}
	g.names[name] = spec.Name.Pos()

	t = &grainType{name: spec.Name.Name, regName: name, lower: lowerCamel(spec.Name.Name)}
	for _, field := range iface.Methods.List {
		if len(field.Names) == 0 {
			g.sink.invalid(field.Pos(), "%s: embedded %s is not supported: declare its methods in the grain interface itself (their directives and wire names belong there)",
				spec.Name.Name, types.ExprString(field.Type))
			continue
		}
		if m := g.method(p, t, field, spec, typeErrs); m != nil {
			t.methods = append(t.methods, m)
		}
	}
	// Calls address methods by wire name: two methods must not share one.
	wire := map[string]*ast.Field{}
	for _, field := range iface.Methods.List {
		if len(field.Names) == 0 {
			continue
		}
		for _, m := range t.methods {
			if m.name != field.Names[0].Name {
				continue
			}
			if other, dup := wire[m.wireName]; dup {
				g.sink.invalid(field.Pos(), "%s.%s: wire name %q is also the wire name of %s at %s (rename one with %s%s name=...)",
					t.name, m.name, m.wireName, other.Names[0].Name, g.sink.relPos(other.Pos(), field.Pos()), directivePrefix, dirMethod)
			}
			wire[m.wireName] = field
		}
	}
	if len(g.sink.errs) > nerrs {
		return nil, true
	}
	return t, true
}

// validGrainName checks a registered grain type name: grain IDs print as
// "type/key" and directory keys embed the type, so it has no slash and no
// space.
func validGrainName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("empty")
	case strings.ContainsRune(s, '/'):
		return fmt.Errorf("contains a slash")
	case strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }):
		return fmt.Errorf("contains a space or an unprintable character")
	}
	return nil
}

// method checks one method of a grain interface.
func (g *generator) method(p *packages.Package, t *grainType, field *ast.Field, spec *ast.TypeSpec, typeErrs []packages.Error) *method {
	ident := field.Names[0]
	fn, ok := p.TypesInfo.Defs[ident].(*types.Func)
	if !ok {
		g.sink.invalid(ident.Pos(), "%s.%s: method could not be type-checked", t.name, ident.Name)
		return nil
	}
	sig := fn.Type().(*types.Signature)
	where := t.name + "." + ident.Name
	nerrs := len(g.sink.errs)
	m := &method{
		name:     ident.Name,
		wireName: ident.Name,
		varName:  t.lower + ident.Name,
	}

	for _, d := range directives(field.Doc, field.Comment) {
		switch d.name {
		case dirReadOnly:
			m.readOnly = true
		case dirOneWay:
			m.oneWay = true
		case dirInterleave:
			m.interleave = true
		case dirMethod:
			g.methodDirective(d, m)
		case dirGrain:
			g.sink.invalid(d.pos, "%s%s applies to interface types, not to methods", directivePrefix, dirGrain)
		default:
			g.sink.invalid(d.pos, "unknown directive %s%s", directivePrefix, d.name)
		}
		if len(d.args) > 0 && (d.name == dirReadOnly || d.name == dirOneWay || d.name == dirInterleave) {
			g.sink.invalid(d.pos, "%s%s takes no arguments", directivePrefix, d.name)
		}
	}

	if !ident.IsExported() {
		g.sink.invalid(ident.Pos(), "%s: grain methods must be exported", where)
	}
	if ident.Name == "ID" {
		g.sink.invalid(ident.Pos(), "%s: the method name ID is reserved: %s.ID returns the grain's identity", where, t.refType())
	}

	ftype := field.Type.(*ast.FuncType)
	paramPos := fieldPositions(ftype.Params, sig.Params().Len())
	resultPos := fieldPositions(ftype.Results, sig.Results().Len())

	// A signature with types the checker could not resolve: report the
	// type errors inside the interface, which explain why.
	if hasInvalidType(sig) {
		reported := false
		for _, e := range typeErrs {
			pos := parseErrorPos(e.Pos)
			start, end := g.sink.fset.Position(spec.Pos()), g.sink.fset.Position(spec.End())
			if pos.Filename == start.Filename && pos.Line >= start.Line && pos.Line <= end.Line {
				g.sink.errs = append(g.sink.errs, &Error{Pos: pos, Msg: e.Msg, Err: ErrInvalid})
				reported = true
			}
		}
		if !reported {
			g.sink.invalid(ident.Pos(), "%s: signature has types that could not be type-checked", where)
			// A package that failed to import (a dependency that does
			// not compile) explains it.
			for _, e := range typeErrs {
				if strings.HasPrefix(e.Msg, "could not import") {
					g.sink.errs = append(g.sink.errs, &Error{Pos: parseErrorPos(e.Pos), Msg: e.Msg, Err: ErrInvalid})
				}
			}
		}
		return nil
	}

	params := sig.Params()
	if params.Len()-1 > maxParams {
		g.sink.invalid(paramPos[maxParams+1], "%s: at most %d parameters besides the context are supported: pass a struct to pass more", where, maxParams)
	}
	switch {
	case params.Len() == 0:
		g.sink.invalid(ident.Pos(), "%s: first parameter must be context.Context", where)
	case !isContext(params.At(0).Type()):
		g.sink.invalid(paramPos[0], "%s: first parameter must be context.Context, not %s", where, typeString(params.At(0).Type(), p.Types))
	default:
		m.ctxName = params.At(0).Name()
	}
	for i := 1; i < params.Len(); i++ {
		v := params.At(i)
		label := paramLabel(v.Name(), i)
		if sig.Variadic() && i == params.Len()-1 {
			g.sink.invalid(paramPos[i], "%s: variadic parameter %s is not supported: use a slice", where, label)
			continue
		}
		if issue := wireProblem(v.Type(), p.Types); issue != "" {
			g.sink.invalid(paramPos[i], "%s: parameter %s: %s", where, label, issue)
			continue
		}
		m.params = append(m.params, &param{name: v.Name(), typ: v.Type()})
	}

	results := sig.Results()
	n := results.Len()
	switch {
	case n == 0:
		g.sink.invalid(ident.Pos(), "%s: last result must be error", where)
	case !isError(results.At(n - 1).Type()):
		g.sink.invalid(resultPos[n-1], "%s: last result must be error, not %s", where, typeString(results.At(n-1).Type(), p.Types))
	case n > 2:
		g.sink.invalid(resultPos[1], "%s: at most one result besides error is allowed: return a struct to return more", where)
	case n == 2:
		m.result = results.At(0).Type()
		if issue := wireProblem(m.result, p.Types); issue != "" {
			g.sink.invalid(resultPos[0], "%s: result: %s", where, issue)
		}
		if m.oneWay {
			g.sink.invalid(ident.Pos(), "%s: a %s%s method must return only error", where, directivePrefix, dirOneWay)
		}
	}

	if len(g.sink.errs) > nerrs {
		return nil
	}
	m.copyFree = m.result == nil || isCopyFree(m.result)
	for _, prm := range m.params {
		m.copyFree = m.copyFree && isCopyFree(prm.typ)
	}
	return m
}

// maxParams is grain.MaxParams: the helpers of package grain cover methods
// with up to that many parameters after the context.
const maxParams = 8

// methodDirective applies //granary:method name=<wire name> to m.
func (g *generator) methodDirective(d directive, m *method) {
	if len(d.args) == 0 {
		g.sink.invalid(d.pos, "%s%s: want name=<wire name>", directivePrefix, dirMethod)
	}
	for _, arg := range d.args {
		v, ok := strings.CutPrefix(arg, "name=")
		if !ok {
			g.sink.invalid(d.pos, "%s%s: unknown option %q (want name=<wire name>)", directivePrefix, dirMethod, arg)
			continue
		}
		if err := validWireName(v); err != nil {
			g.sink.invalid(d.pos, "%s%s: invalid name %q: %v", directivePrefix, dirMethod, v, err)
			continue
		}
		m.wireName = v
	}
}

// validWireName checks a method's wire name as grain does (grain panics
// at init on a name it refuses): 1 to 128 bytes of printable characters
// without spaces, not starting with '$', which is reserved for the
// runtime's own methods (the reminder tick).
func validWireName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("empty")
	case len(s) > 128:
		return fmt.Errorf("longer than 128 bytes")
	case strings.HasPrefix(s, "$"):
		return fmt.Errorf("'$' starts the names reserved for the runtime's methods")
	case !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }):
		return fmt.Errorf("contains a space or an unprintable character")
	}
	return nil
}

// fieldPositions returns the position of each of the n parameters (or
// results) declared by fields: its name, or its type if it is unnamed.
func fieldPositions(fields *ast.FieldList, n int) []token.Pos {
	var pos []token.Pos
	if fields != nil {
		for _, f := range fields.List {
			if len(f.Names) == 0 {
				pos = append(pos, f.Type.Pos())
			}
			for _, name := range f.Names {
				pos = append(pos, name.Pos())
			}
		}
	}
	for len(pos) < n { // cannot happen for a type-checked signature
		pos = append(pos, token.NoPos)
	}
	return pos
}

// paramLabel names parameter i in messages.
func paramLabel(name string, i int) string {
	if name == "" || name == "_" {
		return fmt.Sprintf("#%d", i+1)
	}
	return name
}

// isContext reports whether t is context.Context.
func isContext(t types.Type) bool {
	n, ok := types.Unalias(t).(*types.Named)
	return ok && n.Obj().Pkg() != nil && n.Obj().Pkg().Path() == "context" && n.Obj().Name() == "Context"
}

// isError reports whether t is the predeclared error type.
func isError(t types.Type) bool {
	return types.Identical(t, types.Universe.Lookup("error").Type())
}

// typeString prints t for messages, qualified relative to pkg.
func typeString(t types.Type, pkg *types.Package) string {
	return types.TypeString(t, types.RelativeTo(pkg))
}

// lowerCamel lowers the leading capitals of an exported name, keeping an
// initialism's last capital when it starts the next word: Greeter ->
// greeter, URL -> url, HTTPServer -> httpServer.
func lowerCamel(s string) string {
	r := []rune(s)
	n := 0
	for n < len(r) && unicode.IsUpper(r[n]) {
		n++
	}
	if n > 1 && n < len(r) && unicode.IsLower(r[n]) {
		n--
	}
	for i := range n {
		r[i] = unicode.ToLower(r[i])
	}
	return string(r)
}
