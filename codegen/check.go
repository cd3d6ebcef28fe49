package codegen

import (
	"fmt"
	"go/types"
	"reflect"
	"strings"
)

// wireProblem explains why values of type t cannot cross the wire (be
// encoded with msgpack by one process and decoded by another), or returns
// "" if they can. It looks through pointers, slices, arrays, maps and the
// fields msgpack encodes (exported ones, and embedded ones, which it
// inlines), and rejects channels, functions, unsafe pointers, interfaces
// (nothing to decode into), complex numbers (msgpack has none) and
// unexported named types. Named types that encode themselves (msgpack's
// CustomEncoder or Marshaler, encoding.BinaryMarshaler or TextMarshaler,
// with the matching decoder) are accepted as they are.
func wireProblem(t types.Type, pkg *types.Package) string {
	c := &wireChecker{pkg: pkg, seen: map[string]bool{}}
	reason := c.check(t, false, "")
	if reason == "" {
		return ""
	}
	msg := fmt.Sprintf("type %s cannot cross the wire: %s", typeString(t, pkg), reason)
	if len(c.trail) > 0 {
		msg += " (in field " + strings.Join(c.trail, ", field ") + ")"
	}
	return msg
}

type wireChecker struct {
	pkg   *types.Package
	seen  map[string]bool
	trail []string // struct fields leading to the problem, innermost last
}

// check explains why t cannot cross the wire. embedded is set for the type
// of an embedded field; owner names the named type whose underlying type t
// is, for messages.
func (c *wireChecker) check(t types.Type, embedded bool, owner string) string {
	switch t := types.Unalias(t).(type) {
	case *types.Basic:
		switch {
		case t.Kind() == types.Invalid:
			return "its type could not be determined"
		case t.Kind() == types.UnsafePointer:
			return "unsafe.Pointer cannot be encoded"
		case t.Info()&types.IsComplex != 0:
			return t.Name() + " is not supported by msgpack"
		}
		return ""
	case *types.Pointer:
		return c.check(t.Elem(), embedded, "")
	case *types.Slice:
		return c.check(t.Elem(), false, "")
	case *types.Array:
		return c.check(t.Elem(), false, "")
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
		return c.str(t) + " is an interface"
	case *types.TypeParam:
		return c.str(t) + " is a type parameter"
	case *types.Named:
		if _, isIface := t.Underlying().(*types.Interface); isIface {
			return c.str(t) + " is an interface"
		}
		// An embedded field's type name does not cross the wire: msgpack
		// inlines its fields.
		if !t.Obj().Exported() && !embedded {
			return c.str(t) + " is unexported"
		}
		if holdsRef(t) {
			return c.str(t) + " is a grain reference, which msgpack would encode as nothing: pass the grain's key or grain.ID instead"
		}
		key := types.TypeString(t, nil)
		if c.seen[key] {
			return ""
		}
		c.seen[key] = true
		if encodesItself(t) {
			return ""
		}
		return c.check(t.Underlying(), false, t.Obj().Name())
	case *types.Struct:
		for i := range t.NumFields() {
			f := t.Field(i)
			if !f.Exported() && !f.Embedded() || msgpackSkipped(t.Tag(i)) {
				continue
			}
			if r := c.check(f.Type(), f.Embedded(), ""); r != "" {
				name := f.Name()
				if owner != "" {
					name = owner + "." + name
				}
				c.trail = append([]string{name}, c.trail...)
				return r
			}
		}
		return ""
	}
	return c.str(t) + " is not supported"
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

// msgpackSkipped reports whether a struct tag tells msgpack to skip the
// field (`msgpack:"-"`).
func msgpackSkipped(tag string) bool {
	v, ok := reflect.StructTag(tag).Lookup("msgpack")
	return ok && (v == "-" || strings.HasPrefix(v, "-,"))
}

// encodesItself reports whether msgpack encodes t through methods of t or
// *t rather than through its structure, and can decode it back.
func encodesItself(t *types.Named) bool {
	ms := types.NewMethodSet(types.NewPointer(t))
	has := func(name string) bool { return ms.Lookup(nil, name) != nil }
	return has("EncodeMsgpack") && has("DecodeMsgpack") ||
		has("MarshalMsgpack") && has("UnmarshalMsgpack") ||
		has("MarshalBinary") && has("UnmarshalBinary") ||
		has("MarshalText") && has("UnmarshalText")
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
