package grain

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"

	"github.com/granary-rt/granary/grain/codec"
)

// decodeState decodes a stored state into v, a pointer to a zero value.
// Struct fields match stored entries by name (the msgpack tag, else the Go
// field name): a stored entry without a field is skipped, a field without a
// stored entry stays zero. When a stored value does not fit its field's
// type, the error names the field, e.g.
//
//	field "address.zip" of bank.accountState: stored string does not decode into it: msgpack: invalid code=a5 decoding int64
//
// (msgpack's own error names neither the field nor the stored kind). Values
// are never part of the message: state may be sensitive. Stored bytes are
// untrusted: they are decoded with codec.Unmarshal, so a panic of the
// decoder is an error too, and bytes that are not well-formed msgpack are
// rejected before anything is allocated for them.
func decodeState(data []byte, v any) error {
	err := unmarshal(data, v)
	if err == nil {
		return nil
	}
	t := reflect.TypeOf(v).Elem()
	if errors.Is(err, codec.ErrMalformed) {
		return fmt.Errorf("into %s: %w", t, err) // no field to blame
	}
	if path, kind, ok := locate(data, t); ok && len(path) > 0 {
		return fmt.Errorf("field %q of %s: stored %s does not decode into it: %w", formatPath(path), t, kind, err)
	}
	return fmt.Errorf("into %s: %w", t, err)
}

// unmarshal is codec.Unmarshal: msgpack.Unmarshal after a check of the
// bytes, with a panic of the decoder turned into an error. msgpack v5.4.1
// panics on some input that does not fit the target, e.g. nil stored for a
// time.Time field (which a *time.Time field writes): "reflect: call of
// reflect.Value.IsNil on struct Value".
func unmarshal(data []byte, v any) error { return codec.Unmarshal(data, v) }

// step is one level of the path to a stored value: a map entry (its raw key
// and the key as text) or an array element.
type step struct {
	key   []byte // raw msgpack key of a map entry; nil for an array element
	label string // the key, or "[i]"
}

// locate finds the stored value that makes decoding into a new t fail, by
// decoding partial copies of data: at each level, the container with one of
// its entries alone, wrapped in the path that leads to it. It descends into
// the first entry that fails alone, as long as the container itself (empty)
// decodes. It returns the path and the kind of the value found, or ok false
// if data is not well formed or no single entry is to blame.
func locate(data []byte, t reflect.Type) (path []step, kind string, ok bool) {
	fails := func(wrapped []byte) bool {
		return unmarshal(wrapped, reflect.New(t).Interface()) != nil
	}
	node := data
	for len(node) > 0 {
		code := node[0]
		isMap, isArray := isMapCode(code), isArrayCode(code)
		if !isMap && !isArray {
			return path, kindOf(code), true
		}
		if fails(wrap(path, emptyContainer(isMap))) {
			return path, kindOf(code), true // the container itself does not fit
		}
		children, err := childrenOf(node)
		if err != nil {
			return nil, "", false
		}
		found := false
		for i, c := range children {
			s := step{key: c.key} // key is nil for an array element
			if fails(wrap(append(path, s), c.val)) {
				if isMap {
					s.label = keyLabel(c.key)
				} else {
					s.label = "[" + strconv.Itoa(i) + "]"
				}
				path, node, found = append(path, s), c.val, true
				break
			}
		}
		if !found {
			return path, kindOf(code), len(path) > 0
		}
	}
	return nil, "", false
}

type child struct{ key, val []byte }

// childrenOf splits a raw map or array into its raw entries.
func childrenOf(node []byte) ([]child, error) {
	dec := msgpack.NewDecoder(bytes.NewReader(node))
	isMap := isMapCode(node[0])
	var (
		n   int
		err error
	)
	if isMap {
		n, err = dec.DecodeMapLen()
	} else {
		n, err = dec.DecodeArrayLen()
	}
	if err != nil {
		return nil, err
	}
	out := make([]child, 0, min(n, 1024)) // n is untrusted
	for range n {
		var c child
		if isMap {
			if c.key, err = dec.DecodeRaw(); err != nil {
				return nil, err
			}
		}
		if c.val, err = dec.DecodeRaw(); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// wrap puts val at path: each map step becomes a map with that one entry,
// each array step an array with that one element.
func wrap(path []step, val []byte) []byte {
	for i := len(path) - 1; i >= 0; i-- {
		var buf bytes.Buffer
		enc := msgpack.NewEncoder(&buf)
		if path[i].key != nil {
			_ = enc.EncodeMapLen(1)
			buf.Write(path[i].key)
		} else {
			_ = enc.EncodeArrayLen(1)
		}
		buf.Write(val)
		val = buf.Bytes()
	}
	return val
}

func emptyContainer(isMap bool) []byte {
	if isMap {
		return []byte{msgpcode.FixedMapLow}
	}
	return []byte{msgpcode.FixedArrayLow}
}

func keyLabel(raw []byte) string {
	var k any
	if err := unmarshal(raw, &k); err != nil {
		return "?"
	}
	return fmt.Sprint(k)
}

func formatPath(path []step) string {
	var b strings.Builder
	for i, s := range path {
		if i > 0 && s.key != nil {
			b.WriteByte('.')
		}
		b.WriteString(s.label)
	}
	return b.String()
}

func isMapCode(c byte) bool {
	return msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32
}

func isArrayCode(c byte) bool {
	return msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32
}

// kindOf names the kind of a stored msgpack value, for error messages.
func kindOf(c byte) string {
	switch {
	case c == msgpcode.Nil:
		return "nil"
	case c == msgpcode.True || c == msgpcode.False:
		return "bool"
	case msgpcode.IsFixedNum(c) || c >= msgpcode.Uint8 && c <= msgpcode.Int64:
		return "integer"
	case c == msgpcode.Float || c == msgpcode.Double:
		return "float"
	case msgpcode.IsString(c):
		return "string"
	case msgpcode.IsBin(c):
		return "bytes"
	case isMapCode(c):
		return "map"
	case isArrayCode(c):
		return "array"
	case msgpcode.IsExt(c) || msgpcode.IsFixedExt(c):
		return "extension value (e.g. a time)"
	}
	return fmt.Sprintf("value of msgpack code %#x", c)
}
