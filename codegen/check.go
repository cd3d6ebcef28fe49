package codegen

import (
	"fmt"
	"go/types"
	"reflect"
	"strings"

	"github.com/granary-rt/granary/grain/codec"
)

// wireProblem explains why values of type t cannot cross the wire (be
// encoded with msgpack by one process and decoded by another, arriving
// equal to what was sent), or returns "" if they can. It looks through
// pointers, slices, arrays, maps and struct fields, and rejects:
//
//   - channels, functions, unsafe pointers, uintptr (msgpack's encoder
//     panics on one) and complex numbers (msgpack has none);
//   - interfaces: the receiver would get msgpack's generic maps, slices
//     and numbers, not the type that was sent;
//   - unexported named types, and type parameters;
//   - unexported struct fields, which msgpack leaves out: they would
//     arrive as zero values. A field tagged `msgpack:"-"` is left out on
//     purpose and is fine, and so is a blank (_) field. An embedded
//     unexported struct is fine when its own fields are (msgpack reaches
//     them through it), but an embedded pointer to an unexported type or
//     an embedded unexported non-struct type is not: msgpack cannot set
//     it when decoding;
//   - recursive types (a type that reaches itself through pointers,
//     slices or maps): msgpack does not detect cycles, so encoding one
//     recurses until the goroutine's stack overflows, which kills the
//     process, and even acyclic values are limited to codec.MaxDepth
//     levels of nesting, a limit that would fail only at run time, on the
//     receiving side, once the data grows deep enough;
//   - a named type that encodes itself only through pointer methods,
//     used where msgpack has no pointer to it (a map key or value, or
//     inside one): msgpack then fails to encode it;
//   - a struct whose encoding methods are promoted from an embedded
//     field, and that has other fields: msgpack calls the promoted
//     methods, which encode the embedded field alone
//     (struct{ time.Time; Note string } loses Note);
//   - two fields of a struct encoded under one key (msgpack tags, or an
//     embedded struct tagged `msgpack:",inline"` that shadows a field):
//     msgpack decodes both from that key.
//
// Named types that encode themselves (msgpack's CustomEncoder or
// Marshaler, encoding.BinaryMarshaler or TextMarshaler, with the matching
// decoder) are accepted as they are, whatever their fields: time.Time is
// one.
func wireProblem(t types.Type, pkg *types.Package) string {
	c := &wireChecker{pkg: pkg, onPath: map[string]bool{}, done: map[string]bool{}}
	reason := c.check(t, true, "")
	if reason == "" {
		return ""
	}
	msg := fmt.Sprintf("type %s cannot cross the wire: %s", typeString(t, pkg), reason)
	if len(c.trail) > 0 {
		msg += " (in field " + strings.Join(c.trail, ", field ") + ")"
	}
	if c.why != "" {
		msg += ": " + c.why
	}
	return msg
}

type wireChecker struct {
	pkg *types.Package
	// onPath holds the named types being checked, outermost first: one
	// met again is recursive.
	onPath map[string]bool
	// done holds the named types found fine, with the addressability they
	// were checked with.
	done  map[string]bool
	trail []string // struct fields leading to the problem, innermost last
	why   string   // why the problem is one, if the reason does not say
}

// fail returns what is wrong, and keeps why for the end of the message,
// after the fields that lead to it.
func (c *wireChecker) fail(why, format string, args ...any) string {
	c.why = why
	return fmt.Sprintf(format, args...)
}

// check explains why t cannot cross the wire. addressable is whether
// msgpack reaches values of t through a pointer (it does for the argument
// and reply structs, and through pointers and slices, but not in map keys
// and values): it matters for types that encode themselves through
// pointer methods. owner names the named type whose underlying type t is,
// for messages.
func (c *wireChecker) check(t types.Type, addressable bool, owner string) string {
	switch t := types.Unalias(t).(type) {
	case *types.Basic:
		switch {
		case t.Kind() == types.Invalid:
			return "its type could not be determined"
		case t.Kind() == types.UnsafePointer:
			return "unsafe.Pointer cannot be encoded"
		case t.Kind() == types.Uintptr:
			return c.fail("its encoder panics", "uintptr is not supported by msgpack")
		case t.Info()&types.IsComplex != 0:
			return t.Name() + " is not supported by msgpack"
		}
		return ""
	case *types.Pointer:
		return c.check(t.Elem(), true, "")
	case *types.Slice:
		return c.check(t.Elem(), true, "")
	case *types.Array:
		return c.check(t.Elem(), addressable, "")
	case *types.Map:
		if r := c.check(t.Key(), false, ""); r != "" {
			return r
		}
		return c.check(t.Elem(), false, "")
	case *types.Chan:
		return c.str(t) + " is a channel"
	case *types.Signature:
		return c.str(t) + " is a function"
	case *types.Interface:
		return c.fail(interfaceWhy, "%s is an interface", c.str(t))
	case *types.TypeParam:
		return c.str(t) + " is a type parameter"
	case *types.Named:
		if _, isIface := t.Underlying().(*types.Interface); isIface {
			return c.fail(interfaceWhy, "%s is an interface", c.str(t))
		}
		if !t.Obj().Exported() {
			return c.str(t) + " is unexported"
		}
		if holdsRef(t) {
			return c.str(t) + " is a grain reference, which msgpack would encode as nothing: pass the grain's key or grain.ID instead"
		}
		return c.named(t, addressable)
	case *types.Struct:
		for i := range t.NumFields() {
			f := t.Field(i)
			// A blank field holds nothing; _msgpack holds msgpack's options.
			if f.Name() == "_" || f.Name() == "_msgpack" || msgpackSkipped(t.Tag(i)) {
				continue
			}
			name := f.Name()
			if owner != "" {
				name = owner + "." + name
			}
			var r string
			switch {
			case f.Embedded():
				r = c.embedded(f, addressable)
			case !f.Exported():
				// Not pushed onto the trail: the message names it.
				fix := "export it, or tag it `msgpack:\"-\"` to leave it out on purpose"
				if f.Pkg() != c.pkg {
					fix = "if the type is yours, export the field or tag it `msgpack:\"-\"`; " +
						"otherwise tag the field that holds it `msgpack:\"-\"`, or send a type of your own"
				}
				return c.fail("msgpack leaves unexported fields out, so it would arrive as its zero value: "+fix,
					"field %s is unexported", name)
			default:
				r = c.check(f.Type(), addressable, "")
			}
			if r != "" {
				c.trail = append([]string{name}, c.trail...)
				return r
			}
		}
		if _, clash := msgpackKeys(t, owner); clash != "" {
			return c.fail("msgpack would decode both from one key, and one of them would arrive as its zero value: "+
				"give one another name with a msgpack tag", "%s", clash)
		}
		return ""
	}
	return c.str(t) + " is not supported"
}

const interfaceWhy = "msgpack would decode it as generic maps, slices and numbers, not as the type that was sent"

// named checks a named type that is not an interface, whatever its name.
func (c *wireChecker) named(t *types.Named, addressable bool) string {
	if method, from, lost := promotedCoder(t); method != "" {
		return c.fail(fmt.Sprintf("msgpack would encode that field alone, and %s would arrive as its zero value: "+
			"make %s a named field, or give %s its own encoding methods", lost, from, c.str(t)),
			"%s encodes itself with %s promoted from its embedded field %s", c.str(t), method, from)
	}
	if encodesItself(t) {
		if addressable || encodesItselfByValue(t) {
			return "" // opaque: its methods decide what crosses
		}
		name := c.str(t)
		return c.fail(fmt.Sprintf("msgpack cannot call them on a map key or value, or on a value inside one: "+
			"give the encoding method a %s receiver, not *%s, or put *%s in the map", name, name, name),
			"%s encodes itself only through methods of *%s", name, name)
	}
	key := types.TypeString(t, nil)
	if c.onPath[key] {
		return c.fail(fmt.Sprintf("msgpack does not detect cycles (encoding one recurses until the process runs out of stack), "+
			"and the receiver decodes at most %d levels of nesting: flatten it "+
			"(a slice of nodes that refer to each other by index, for example), or give it its own encoding methods", codec.MaxDepth),
			"%s refers to itself", c.str(t))
	}
	doneKey := fmt.Sprintf("%s/%t", key, addressable)
	if c.done[doneKey] {
		return ""
	}
	c.onPath[key] = true
	r := c.check(t.Underlying(), addressable, c.str(t))
	delete(c.onPath, key)
	if r == "" {
		c.done[doneKey] = true
	}
	return r
}

// embedded checks an embedded struct field. An exported one is a field
// like any other: msgpack either inlines its fields or encodes it under
// its type's name. Of an unexported one, msgpack can reach the fields of
// a struct value, but cannot set a pointer or a value of another kind.
func (c *wireChecker) embedded(f *types.Var, addressable bool) string {
	t := types.Unalias(f.Type())
	if _, isIface := t.Underlying().(*types.Interface); f.Exported() || isIface {
		return c.check(t, addressable, "")
	}
	if _, ok := t.(*types.Pointer); ok {
		return c.fail("msgpack cannot allocate it when decoding: embed the struct value, or export its type",
			"embedded %s is a pointer to an unexported type", c.str(t))
	}
	n, isNamed := t.(*types.Named)
	what := "not a struct"
	if isNamed {
		if _, isStruct := n.Underlying().(*types.Struct); isStruct {
			if !encodesItself(n) {
				return c.named(n, addressable)
			}
			what = "encodes itself"
		}
	}
	return c.fail("msgpack cannot set it when decoding: export its type, or make it a named field",
		"embedded %s is unexported and %s", c.str(t), what)
}

func (c *wireChecker) str(t types.Type) string { return typeString(t, c.pkg) }

// holdsRef reports whether t is grain.Ref or a struct holding one in a
// field (a generated XxxRef): its fields are unexported, so it would
// arrive as a reference with no caller and no target.
func holdsRef(t *types.Named) bool {
	isRef := func(t types.Type) bool {
		n, ok := types.Unalias(t).(*types.Named)
		return ok && n.Obj().Pkg() != nil && n.Obj().Pkg().Path() == GrainPath && n.Obj().Name() == "Ref"
	}
	if isRef(t) {
		return true
	}
	if s, ok := t.Underlying().(*types.Struct); ok {
		for i := range s.NumFields() {
			if isRef(s.Field(i).Type()) {
				return true
			}
		}
	}
	return false
}

// wireKey is a key msgpack encodes a struct's field under, and the field.
type wireKey struct{ key, field string }

// msgpackKeys returns the keys msgpack encodes the fields of st under, as
// its getFields does: a field's tag name or its name, and the fields of an
// embedded plain struct in its place (inlined) unless they clash with
// fields already there. It reports two fields encoded under one key (by
// tags, or by an embedded struct tagged `msgpack:",inline"`, whose clashing
// fields msgpack drops) as clash. owner prefixes field names in it.
func msgpackKeys(st *types.Struct, owner string) (keys []wireKey, clash string) {
	label := func(name string) string {
		if owner == "" {
			return name
		}
		return owner + "." + name
	}
	has := func(key string) (string, bool) {
		for _, k := range keys {
			if k.key == key {
				return k.field, true
			}
		}
		return "", false
	}
	for i := range st.NumFields() {
		f := st.Field(i)
		name, opts, _ := strings.Cut(reflect.StructTag(st.Tag(i)).Get("msgpack"), ",")
		if name == "-" || f.Name() == "_" || f.Name() == "_msgpack" || !f.Exported() && !f.Embedded() {
			continue
		}
		if name == "" {
			name = f.Name()
		}
		if inner := inlinable(f); inner != nil && !hasOption(opts, "noinline") {
			innerKeys, innerClash := msgpackKeys(inner.Underlying().(*types.Struct), label(f.Name()))
			if innerClash != "" {
				return nil, innerClash
			}
			shadowed := ""
			for _, k := range innerKeys {
				if prev, ok := has(k.key); ok && shadowed == "" {
					shadowed = fmt.Sprintf("fields %s and %s are both encoded as %q", prev, k.field, k.key)
				}
			}
			if hasOption(opts, "inline") && shadowed != "" {
				return nil, shadowed
			}
			if shadowed == "" {
				keys = append(keys, innerKeys...)
				continue
			}
			// Not inlined: encoded as one field.
		}
		if prev, ok := has(name); ok {
			return nil, fmt.Sprintf("fields %s and %s are both encoded as %q", prev, label(f.Name()), name)
		}
		keys = append(keys, wireKey{name, label(f.Name())})
	}
	return keys, ""
}

// inlinable returns the type of an embedded field whose fields msgpack
// may inline: a plain struct (that does not encode itself), or a pointer
// to one.
func inlinable(f *types.Var) *types.Named {
	if !f.Embedded() {
		return nil
	}
	t := types.Unalias(f.Type())
	if p, ok := t.(*types.Pointer); ok {
		t = types.Unalias(p.Elem())
	}
	n, ok := t.(*types.Named)
	if !ok {
		return nil
	}
	if _, isStruct := n.Underlying().(*types.Struct); !isStruct || encodesItself(n) {
		return nil
	}
	return n
}

// hasOption reports whether a struct tag's comma-separated options hold
// opt.
func hasOption(opts, opt string) bool {
	for o := range strings.SplitSeq(opts, ",") {
		if o == opt {
			return true
		}
	}
	return false
}

// msgpackSkipped reports whether a struct tag tells msgpack to skip the
// field (`msgpack:"-"`).
func msgpackSkipped(tag string) bool {
	v, ok := reflect.StructTag(tag).Lookup("msgpack")
	return ok && (v == "-" || strings.HasPrefix(v, "-,"))
}

// selfCoders are the encoding and decoding methods msgpack prefers to a
// type's structure, in the order it looks for them.
var selfCoders = [][2]string{
	{"EncodeMsgpack", "DecodeMsgpack"},     // msgpack.CustomEncoder, CustomDecoder
	{"MarshalMsgpack", "UnmarshalMsgpack"}, // msgpack.Marshaler, Unmarshaler
	{"MarshalBinary", "UnmarshalBinary"},   // encoding.BinaryMarshaler, BinaryUnmarshaler
	{"MarshalText", "UnmarshalText"},       // encoding.TextMarshaler, TextUnmarshaler
}

// encodesItself reports whether msgpack encodes t through methods of t or
// *t rather than through its structure, and can decode it back.
func encodesItself(t *types.Named) bool {
	ms := types.NewMethodSet(types.NewPointer(t))
	for _, m := range selfCoders {
		if ms.Lookup(nil, m[0]) != nil && ms.Lookup(nil, m[1]) != nil {
			return true
		}
	}
	return false
}

// promotedCoder reports, of a struct type that encodes itself only
// through methods promoted from an embedded field, the encoding method,
// the embedded field and another field that those methods would leave
// out; otherwise it returns "".
func promotedCoder(t *types.Named) (method, from, lost string) {
	st, ok := t.Underlying().(*types.Struct)
	if !ok {
		return "", "", ""
	}
	ms := types.NewMethodSet(types.NewPointer(t))
	for _, m := range selfCoders {
		enc, dec := ms.Lookup(nil, m[0]), ms.Lookup(nil, m[1])
		if enc == nil || dec == nil {
			continue
		}
		if len(enc.Index()) == 1 {
			return "", "", "" // t's own method: it decides what crosses
		}
		emb := enc.Index()[0]
		for i := range st.NumFields() {
			if f := st.Field(i); i != emb && f.Name() != "_" && f.Name() != "_msgpack" && !msgpackSkipped(st.Tag(i)) {
				return m[0], st.Field(emb).Name(), f.Name()
			}
		}
		return "", "", ""
	}
	return "", "", ""
}

// encodesItselfByValue reports whether encodesItself(t) and msgpack can
// also encode a value of t that it has no pointer to: the encoding method
// has a value receiver.
func encodesItselfByValue(t *types.Named) bool {
	vs, ps := types.NewMethodSet(t), types.NewMethodSet(types.NewPointer(t))
	for _, m := range selfCoders {
		if vs.Lookup(nil, m[0]) != nil && ps.Lookup(nil, m[1]) != nil {
			return true
		}
	}
	return false
}

// isCopyFree reports whether values of type t share no memory and encode
// every bit of themselves, so that handing one over in-process is the same
// as a msgpack round trip: booleans, numbers, strings, and arrays and
// structs of those whose fields are all exported and encoded. time.Time
// and time.Duration are copy-free too. Pointers, slices, maps, interfaces,
// channels and functions are not, and neither are named types that encode
// themselves through methods (their encoded form may differ).
func isCopyFree(t types.Type) bool {
	return copyFree(t, map[string]bool{})
}

func copyFree(t types.Type, seen map[string]bool) bool {
	switch t := types.Unalias(t).(type) {
	case *types.Basic:
		return t.Info()&(types.IsBoolean|types.IsNumeric|types.IsString) != 0 && t.Info()&types.IsComplex == 0
	case *types.Array:
		return copyFree(t.Elem(), seen)
	case *types.Named:
		if obj := t.Obj(); obj.Pkg() != nil && obj.Pkg().Path() == "time" && (obj.Name() == "Time" || obj.Name() == "Duration") {
			return true
		}
		key := types.TypeString(t, nil)
		if seen[key] {
			return true // a struct cannot contain itself by value; be safe
		}
		seen[key] = true
		if encodesItself(t) {
			return false
		}
		return copyFree(t.Underlying(), seen)
	case *types.Struct:
		for i := range t.NumFields() {
			f := t.Field(i)
			if !f.Exported() || msgpackSkipped(t.Tag(i)) || !copyFree(f.Type(), seen) {
				return false
			}
		}
		return true
	}
	return false
}

// hasInvalidType reports whether the signature mentions a type the type
// checker could not resolve.
func hasInvalidType(sig *types.Signature) bool {
	for _, tup := range []*types.Tuple{sig.Params(), sig.Results()} {
		for i := range tup.Len() {
			if invalid(tup.At(i).Type(), map[types.Type]bool{}) {
				return true
			}
		}
	}
	return false
}

func invalid(t types.Type, seen map[types.Type]bool) bool {
	if seen[t] {
		return false
	}
	seen[t] = true
	switch t := types.Unalias(t).(type) {
	case *types.Basic:
		return t.Kind() == types.Invalid
	case *types.Pointer:
		return invalid(t.Elem(), seen)
	case *types.Slice:
		return invalid(t.Elem(), seen)
	case *types.Array:
		return invalid(t.Elem(), seen)
	case *types.Map:
		return invalid(t.Key(), seen) || invalid(t.Elem(), seen)
	case *types.Chan:
		return invalid(t.Elem(), seen)
	case *types.Named:
		args := t.TypeArgs()
		for i := range args.Len() {
			if invalid(args.At(i), seen) {
				return true
			}
		}
		return invalid(t.Underlying(), seen)
	case *types.Struct:
		for i := range t.NumFields() {
			if invalid(t.Field(i).Type(), seen) {
				return true
			}
		}
	}
	return false
}
