package runtime

import (
	"fmt"
	"reflect"
	"sync"
	"time"
	"unsafe"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/grain/codec"
)

// deepCopy returns a copy of v that shares no memory with it, made by a
// msgpack round trip into a new value from newFn. In-process calls of
// methods that are not grain.CopyFree use it, so that caller and grain never
// share mutable memory, exactly as if the call had crossed the network.
// An encoding over limit bytes is not decoded: the error is a *sizeError.
func deepCopy(v any, newFn func() any, limit int) (any, error) {
	if newFn == nil {
		return v, nil
	}
	b, err := msgpack.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("runtime: encode %T: %w", v, err)
	}
	if len(b) > limit {
		return nil, &sizeError{n: len(b), limit: limit}
	}
	out := newFn()
	if err := codec.Unmarshal(b, out); err != nil {
		return nil, fmt.Errorf("runtime: decode %T: %w", out, err)
	}
	return out, nil
}

// sizeError says an encoded value is over the message size limit.
type sizeError struct{ n, limit int }

func (e *sizeError) Error() string {
	return fmt.Sprintf("%d bytes encoded, over the message size limit of %d", e.n, e.limit)
}

// tooLarge is the error of a call to target's method md whose arguments
// (what "arguments") or reply (what "reply") encode to n bytes, over the
// message size limit: the same on in-process and remote calls. A reply
// too large is ran and failed: the method ran, its result is lost.
func tooLarge(target grain.ID, md *grain.MethodDesc, what string, n, limit int) error {
	verb := "are"
	if what == "reply" {
		what, verb = "the reply", "is"
	}
	err := fmt.Errorf("runtime: call %s.%s: %s %s %d bytes encoded, over the message size limit of %d: %w",
		target, md.Name, what, verb, n, limit, grain.ErrTooLarge)
	if verb == "is" {
		err = grain.WithOutcome(err, grain.OutcomeFailed)
	}
	return err
}

// copyArgs returns the arguments an in-process call of md hands to the
// grain: a deep copy, or call.Args itself for a grain.CopyFree method,
// after checking that they would fit in a message (see checkSize).
func copyArgs(call *grain.Call, md *grain.MethodDesc, limit int) (any, error) {
	if md.Flags.Has(grain.CopyFree) {
		if n, over := checkSize(call.Args, limit); over {
			return nil, tooLarge(call.Target, md, "arguments", n, limit)
		}
		return call.Args, nil
	}
	args, err := deepCopy(call.Args, md.NewArgs, limit)
	if se, ok := err.(*sizeError); ok {
		return nil, tooLarge(call.Target, md, "arguments", se.n, se.limit)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s.%s: %w", grain.ErrBadRequest, call.Target, md.Name, err)
	}
	return args, nil
}

// replyFor returns what the caller of m gets of reply: a copy for a local
// caller (see copyReply), the encoding (an encodedReply) for a remote one;
// for both, a reply over limit is an error naming the method. A one-way
// call's reply is dropped.
func replyFor(m *message, reply any, limit int) (any, error) {
	switch {
	case m.done != nil:
		return copyReply(m.target, m.method, reply, limit)
	case m.replyFn != nil:
		b, err := msgpack.Marshal(reply)
		if err != nil {
			// The method ran; only its result cannot be sent.
			return nil, grain.WithOutcome(fmt.Errorf("%w: %s.%s: encode reply: %w", grain.ErrBadRequest, m.target, m.method.Name, err), grain.OutcomeFailed)
		}
		if len(b) > limit {
			return nil, tooLarge(m.target, m.method, "reply", len(b), limit)
		}
		return encodedReply(b), nil
	}
	return nil, nil
}

// encodedReply is a reply already encoded for a remote caller.
type encodedReply []byte

// copyReply is copyArgs for the reply of a turn of md on target, given to
// an in-process caller.
func copyReply(target grain.ID, md *grain.MethodDesc, reply any, limit int) (any, error) {
	if md.Flags.Has(grain.CopyFree) {
		if n, over := checkSize(reply, limit); over {
			return nil, tooLarge(target, md, "reply", n, limit)
		}
		return reply, nil
	}
	out, err := deepCopy(reply, md.NewReply, limit)
	if se, ok := err.(*sizeError); ok {
		return nil, tooLarge(target, md, "reply", se.n, se.limit)
	}
	return out, err
}

// checkSize reports whether v, a copy-free value (see grain.CopyFree),
// encodes to more than limit bytes, and if so how many. It does not encode
// v unless a bound on its encoded size, computed from its type and the
// lengths of its strings, is over limit: for nearly every call it costs a
// type lookup and reading the length of each string.
func checkSize(v any, limit int) (n int, over bool) {
	if _, ok := v.(*grain.Args0); ok && limit > 0 || v == nil { // an empty tuple is 1 byte
		return 0, false
	}
	rv := reflect.ValueOf(v)
	p := planFor(rv.Type())
	bound := p.fixed
	switch {
	case p.walk:
		var ok bool
		if bound, ok = sizeBound(rv); !ok {
			bound = limit + 1 // a type the bound does not know: encode it
		}
	case len(p.strs) > 0:
		if rv.IsNil() {
			return 0, false
		}
		base := rv.UnsafePointer()
		for _, off := range p.strs {
			bound += len(*(*string)(unsafe.Add(base, off)))
		}
	}
	if bound <= limit {
		return 0, false
	}
	b, err := msgpack.Marshal(v)
	if err != nil || len(b) <= limit {
		return 0, false // an encoding error is the grain's or the codec's to report
	}
	return len(b), true
}

// sizePlan is what checkSize knows of a type: for a pointer to a value
// of copy-free kinds, the bound of its encoded size without the bytes of
// its strings, and the offsets of those strings from the pointer;
// otherwise, that each value must be walked.
type sizePlan struct {
	fixed int
	strs  []uintptr
	walk  bool
}

// maxPlanStrings bounds the strings a plan lists (arrays of strings
// count each element); a type with more is walked.
const maxPlanStrings = 64

var sizePlans sync.Map // reflect.Type -> sizePlan

func planFor(t reflect.Type) sizePlan {
	if p, ok := sizePlans.Load(t); ok {
		return p.(sizePlan)
	}
	p := sizePlan{walk: true}
	if t.Kind() == reflect.Pointer {
		var q sizePlan
		if n, ok := q.add(t.Elem(), 0, 0); ok {
			q.fixed = n
			p = q
		}
	}
	sizePlans.Store(t, p)
	return p
}

// add adds the strings of a value of type t at offset off to p, and
// returns the bound of its encoding without their bytes (see sizeBound);
// false if t has kinds a plan does not handle.
func (p *sizePlan) add(t reflect.Type, off uintptr, depth int) (int, bool) {
	if depth > 32 {
		return 0, false
	}
	switch t.Kind() {
	case reflect.Bool:
		return 1, true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64:
		return 9, true
	case reflect.String:
		if len(p.strs) == maxPlanStrings {
			return 0, false
		}
		p.strs = append(p.strs, off)
		return 5, true
	case reflect.Array:
		n := 5
		for i := range t.Len() {
			m, ok := p.add(t.Elem(), off+uintptr(i)*t.Elem().Size(), depth+1)
			if !ok {
				return 0, false
			}
			n += m
		}
		return n, true
	case reflect.Struct:
		if t == timeType {
			return 15, true
		}
		n := 5
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			m, ok := p.add(f.Type, off+f.Offset, depth+1)
			if !ok {
				return 0, false
			}
			n += 5 + len(f.Name) + len(f.Tag) + m
		}
		return n, true
	}
	return 0, false
}

var timeType = reflect.TypeFor[time.Time]()

// sizeBound returns a bound on the msgpack encoding of v, a copy-free value
// (or a pointer to one): at most 9 bytes a number, 5 bytes plus the bytes
// of a string, 15 a time.Time, and a 5-byte header plus each field's name
// (and tag) plus 5 bytes for the key of each field of a struct (encoded as
// a map, the larger of its two forms). ok is false for kinds a copy-free
// value does not have (slices, maps, interfaces).
func sizeBound(v reflect.Value) (n int, ok bool) {
	switch v.Kind() {
	case reflect.Bool:
		return 1, true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64:
		return 9, true
	case reflect.String:
		return 5 + v.Len(), true
	case reflect.Pointer:
		if v.IsNil() {
			return sizeBound(reflect.Zero(v.Type().Elem()))
		}
		return sizeBound(v.Elem())
	case reflect.Array:
		n = 5
		for i := range v.Len() {
			m, ok := sizeBound(v.Index(i))
			if !ok {
				return 0, false
			}
			n += m
		}
		return n, true
	case reflect.Struct:
		t := v.Type()
		if t == timeType {
			return 15, true
		}
		n = 5
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			m, ok := sizeBound(v.Field(i))
			if !ok {
				return 0, false
			}
			n += 5 + len(f.Name) + len(f.Tag) + m
		}
		return n, true
	}
	return 0, false
}
