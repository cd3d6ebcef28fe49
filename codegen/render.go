package codegen

import (
	"bytes"
	"errors"
	"fmt"
	"go/format"
	"go/scanner"
	"go/token"
	"strconv"
	"strings"
)

// render writes the generated file for src and formats it. out is the
// output path, for errors.
func render(gp *grainPackage, src *sourceFile, out string) ([]byte, error) {
	im := newImports(gp, src)
	var body bytes.Buffer
	for _, t := range src.grains {
		r := &renderer{w: &body, im: im, t: t}
		if t.observer {
			r.observerType() // observer.go
			continue
		}
		r.grain()
	}

	var b bytes.Buffer
	b.WriteString(Header + "\n\n")
	fmt.Fprintf(&b, "package %s\n\n", gp.types.Name())
	b.WriteString(im.block())
	fmt.Fprintf(&b, "\n// Compile-time guard: fails to build against an incompatible grain package.\nconst _ = %s.SupportPackageIsVersion2\n\n", im.grain())
	b.Write(body.Bytes())

	return renderFormat(b.Bytes(), out)
}

// renderFormat formats generated source, reporting a failure at the line
// of the output file it concerns.
func renderFormat(src []byte, out string) ([]byte, error) {
	formatted, err := format.Source(src)
	if err != nil {
		return nil, formatError(src, out, err)
	}
	return formatted, nil
}

// errFormat is the cause of an error formatting generated code: a bug in
// the generator.
var errFormat = errors.New("codegen: generated code does not format (generator bug)")

// formatError reports a go/format failure on generated code at the line of
// the generated file it concerns, quoting that line.
func formatError(src []byte, out string, err error) error {
	line := 0
	var list scanner.ErrorList
	if errors.As(err, &list) && len(list) > 0 {
		line = list[0].Pos.Line
	}
	msg := err.Error()
	if lines := strings.Split(string(src), "\n"); line > 0 && line <= len(lines) {
		msg = fmt.Sprintf("%s (line is %q)", msg, lines[line-1])
	}
	return &Error{
		Pos: token.Position{Filename: out, Line: line},
		Msg: fmt.Sprintf("%v: %s", errFormat, msg),
		Err: fmt.Errorf("%w: %w", errFormat, err),
	}
}

// renderer writes the declarations of one grain interface.
type renderer struct {
	w  *bytes.Buffer
	im *imports
	t  *grainType
}

func (r *renderer) p(format string, args ...any) { fmt.Fprintf(r.w, format, args...) }

// descriptors writes the type descriptor variable of r.t and one method
// descriptor per method, after the doc comment the caller wrote.
func (r *renderer) descriptors() {
	t, gr := r.t, r.im.grain()
	vars := make([]string, len(t.methods))
	for i, m := range t.methods {
		vars[i] = m.varName
	}
	r.p("var %s = %s.NewType(%s, %s)\n\n", t.typeVar(), gr, strconv.Quote(t.regName), strings.Join(vars, ", "))
	r.p("// The methods of %s: wire name, method expression, flags.\n", t.name)
	r.p("var (\n")
	for _, m := range t.methods {
		helper := "NewMethod"
		if m.result == nil {
			helper = "NewAction"
		}
		r.p("%s = %s.%s%d(%s, %s.%s, %s)\n", m.varName, gr, helper, len(m.params), strconv.Quote(m.wireName), t.name, m.name, flags(m, gr))
	}
	r.p(")\n\n")
}

// methodNames are the identifiers a reference method uses.
type methodNames struct {
	ctx        string
	params     []string
	resultType string // printed result type; "" if the method returns only error
}

func (r *renderer) grain() {
	t, gr, ctx := r.t, r.im.grain(), r.im.context()

	r.p("// %s describes the %s grain type: its registered name and\n", t.typeVar(), t.name)
	r.p("// methods. Calls address a method by its wire name and the fingerprint of\n")
	r.p("// its parameter and result types, never by its position.\n")
	r.descriptors()

	ref := t.refType()
	r.p("// %s is a typed reference to a %s grain. It implements %s by\n", ref, t.name, t.name)
	r.p("// calling the grain through a %s.Caller. Refs are small values; copy them\n", gr)
	r.p("// freely.\n")
	r.p("type %s struct{ ref %s.Ref }\n\n", ref, gr)
	r.p("var _ %s = %s{}\n\n", t.name, ref)
	r.p("// %s returns a reference to the %s grain with the given key,\n", t.newRefFunc(), t.name)
	r.p("// calling through c.\n")
	r.p("func %s(c %s.Caller, key string) %s {\n", t.newRefFunc(), gr, ref)
	r.p("return %s{ref: %s.NewRef(c, %s, key)}\n}\n\n", ref, gr, t.typeVar())

	recv, names := r.names()
	r.p("// ID returns the identity of the referenced grain.\n")
	r.p("func (%s %s) ID() %s.ID { return %s.ref.ID() }\n\n", recv, ref, gr, recv)
	for i, m := range t.methods {
		n := names[i]
		if m.oneWay {
			r.p("// %s calls %s.%s on the referenced grain. It is a one-way call:\n", m.name, t.name, m.name)
			r.p("// the grain sends no reply, so a nil error means it was sent, not run.\n")
		} else {
			r.p("// %s calls %s.%s on the referenced grain.\n", m.name, t.name, m.name)
		}
		sig := []string{n.ctx + " " + ctx + ".Context"}
		for j, prm := range m.params {
			sig = append(sig, n.params[j]+" "+r.im.typeString(prm.typ))
		}
		results := "error"
		if m.result != nil {
			results = "(" + n.resultType + ", error)"
		}
		callArgs := append([]string{n.ctx, recv + ".ref"}, n.params...)
		r.p("func (%s %s) %s(%s) %s {\n", recv, ref, m.name, strings.Join(sig, ", "), results)
		r.p("return %s.Call(%s)\n}\n\n", m.varName, strings.Join(callArgs, ", "))
	}

	r.p("// %s registers the %s grain type with r; f builds the\n", t.registerFunc(), t.name)
	r.p("// implementation for each activation.\n")
	r.p("func %s(r %s.Registry, f func(%s.Context) %s, opts ...%s.TypeOption) {\n", t.registerFunc(), gr, gr, t.name, gr)
	r.p("r.RegisterGrainType(%s, func(c %s.Context) any { return f(c) }, opts...)\n}\n\n", t.typeVar(), gr)
}

// names chooses the identifiers of the reference methods. Parameters keep
// their declared names where they can (unnamed ones become p0, p1, ...); a
// parameter whose name would shadow the method's descriptor variable,
// which the body uses, is renamed. The receiver then takes a name no
// parameter uses.
func (r *renderer) names() (recv string, names []methodNames) {
	used := map[string]bool{} // names any method's body needs, for the receiver
	names = make([]methodNames, len(r.t.methods))
	for i, m := range r.t.methods {
		n := &names[i]
		reserved := map[string]bool{m.varName: true}
		if m.result != nil {
			n.resultType = r.im.typeString(m.result)
		}
		taken := map[string]bool{}
		pick := func(want, fallback string) string {
			name := want
			if name == "" || name == "_" || reserved[name] || taken[name] {
				name = fallback
			}
			for reserved[name] || taken[name] {
				name += "_"
			}
			taken[name] = true
			return name
		}
		n.ctx = pick(m.ctxName, "ctx")
		for j, prm := range m.params {
			n.params = append(n.params, pick(prm.name, fmt.Sprintf("p%d", j)))
		}
		for name := range taken {
			used[name] = true
		}
		used[m.varName] = true
	}
	recv = freeName("r", used)
	return recv, names
}

// freeName returns base, or base1, base2, ... the first not in used.
func freeName(base string, used map[string]bool) string {
	name := base
	for i := 1; used[name]; i++ {
		name = base + strconv.Itoa(i)
	}
	return name
}

// flags spells a method's flags as a Go expression.
func flags(m *method, gr string) string {
	var fs []string
	if m.readOnly {
		fs = append(fs, gr+".ReadOnly")
	}
	if m.oneWay {
		fs = append(fs, gr+".OneWay")
	}
	if m.interleave {
		fs = append(fs, gr+".AlwaysInterleave")
	}
	if m.copyFree {
		fs = append(fs, gr+".CopyFree")
	}
	if len(fs) == 0 {
		return "0"
	}
	return strings.Join(fs, " | ")
}
