package grain

import (
	"bytes"
	"encoding"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// canonical rewrites a msgpack value with the entries of every map sorted by
// their encoded keys. Two encodings of equal values then compare equal,
// whatever order the encoder visited map entries in.
func canonical(data []byte) ([]byte, error) {
	var out bytes.Buffer
	out.Grow(len(data))
	dec := msgpack.NewDecoder(bytes.NewReader(data))
	enc := msgpack.NewEncoder(&out)
	if err := canonicalValue(dec, enc, &out); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func canonicalValue(dec *msgpack.Decoder, enc *msgpack.Encoder, out *bytes.Buffer) error {
	code, err := dec.PeekCode()
	if err != nil {
		return err
	}
	switch {
	case msgpcode.IsFixedMap(code) || code == msgpcode.Map16 || code == msgpcode.Map32:
		n, err := dec.DecodeMapLen()
		if err != nil {
			return err
		}
		type entry struct{ k, v []byte }
		entries := make([]entry, 0, n)
		for range n {
			var kb, vb bytes.Buffer
			if err := canonicalValue(dec, msgpack.NewEncoder(&kb), &kb); err != nil {
				return err
			}
			if err := canonicalValue(dec, msgpack.NewEncoder(&vb), &vb); err != nil {
				return err
			}
			entries = append(entries, entry{kb.Bytes(), vb.Bytes()})
		}
		slices.SortFunc(entries, func(a, b entry) int { return bytes.Compare(a.k, b.k) })
		if err := enc.EncodeMapLen(n); err != nil {
			return err
		}
		for _, e := range entries {
			out.Write(e.k)
			out.Write(e.v)
		}
		return nil
	case msgpcode.IsFixedArray(code) || code == msgpcode.Array16 || code == msgpcode.Array32:
		n, err := dec.DecodeArrayLen()
		if err != nil {
			return err
		}
		if err := enc.EncodeArrayLen(n); err != nil {
			return err
		}
		for range n {
			if err := canonicalValue(dec, enc, out); err != nil {
				return err
			}
		}
		return nil
	default:
		raw, err := dec.DecodeRaw()
		if err != nil {
			return fmt.Errorf("grain: canonical form: %w", err)
		}
		out.Write(raw)
		return nil
	}
}

// orderedTypes caches encodesInOrder per type.
var orderedTypes sync.Map // reflect.Type -> bool

var (
	customEncoderType   = reflect.TypeFor[msgpack.CustomEncoder]()
	marshalerType       = reflect.TypeFor[msgpack.Marshaler]()
	binaryMarshalerType = reflect.TypeFor[encoding.BinaryMarshaler]()
	textMarshalerType   = reflect.TypeFor[encoding.TextMarshaler]()
	timeType            = reflect.TypeFor[time.Time]()
)

// encodesInOrder reports whether msgpack encodes every value of t the same
// way each time: no Go map (whose iteration order is random) and nothing
// whose encoding is up to user code (interfaces, custom encoders) can occur
// in it. Such encodings need no canonical form to be compared.
func encodesInOrder(t reflect.Type) bool {
	if v, ok := orderedTypes.Load(t); ok {
		return v.(bool)
	}
	ok := inOrder(t, map[reflect.Type]bool{})
	orderedTypes.Store(t, ok)
	return ok
}

func inOrder(t reflect.Type, seen map[reflect.Type]bool) bool {
	if t == timeType || seen[t] {
		return true
	}
	seen[t] = true
	for _, it := range []reflect.Type{customEncoderType, marshalerType, binaryMarshalerType, textMarshalerType} {
		if t.Implements(it) || reflect.PointerTo(t).Implements(it) {
			return false
		}
	}
	switch t.Kind() {
	case reflect.Map, reflect.Interface, reflect.Func, reflect.Chan, reflect.UnsafePointer:
		return false
	case reflect.Pointer, reflect.Slice, reflect.Array:
		return inOrder(t.Elem(), seen)
	case reflect.Struct:
		for i := range t.NumField() {
			if !inOrder(t.Field(i).Type, seen) {
				return false
			}
		}
	}
	return true
}
