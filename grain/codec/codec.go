package codec

import (
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// MaxDepth is the deepest nesting of arrays and maps Unmarshal accepts: a
// top-level array or map is at depth 1. Nothing Granary encodes comes
// close; the bound keeps the decoder's recursion (and stack) small.
const MaxDepth = 64

// ErrMalformed is wrapped by the errors Unmarshal returns for bytes that
// are not exactly one well-formed msgpack value within the bounds of the
// package doc. Errors from decoding a well-formed value into a Go value it
// does not fit do not wrap it. Check with errors.Is.
var ErrMalformed = errors.New("codec: malformed msgpack")

// Unmarshal decodes the msgpack value in data into v, a non-nil pointer,
// like msgpack.Unmarshal, after checking data as the package doc says. It
// never panics, and allocates O(len(data)).
func Unmarshal(data []byte, v any) (err error) {
	if err := validate(data); err != nil {
		return err
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("codec: msgpack decoder panicked decoding into %T: %v", v, p)
		}
	}()
	return msgpack.Unmarshal(data, v)
}

func malformed(off int, format string, args ...any) error {
	return fmt.Errorf("%w: at byte %d: %s", ErrMalformed, off, fmt.Sprintf(format, args...))
}

// validate checks that data holds exactly one well-formed msgpack value
// within the package's bounds.
func validate(data []byte) error {
	n, err := ValueLen(data)
	if err != nil {
		return err
	}
	if n != len(data) {
		return malformed(n, "%d trailing bytes after the value", len(data)-n)
	}
	return nil
}

// ValueLen returns the length in bytes of the msgpack value data starts
// with, checked as Unmarshal checks its input (the package doc says how),
// but for the bytes after it, which it does not look at. An error wraps
// ErrMalformed. It does not allocate (but for its error) and runs in time
// linear in the value's length. It is how a reader of a larger structure
// (the transport's frame decoder) skips a value it does not decode.
func ValueLen(data []byte) (int, error) {
	// open[i] counts the values still to come in the container open at
	// depth i+1.
	var open [MaxDepth]uint64
	depth, off := 0, 0
	for {
		if off >= len(data) {
			if len(data) == 0 {
				return 0, fmt.Errorf("%w: no value (0 bytes)", ErrMalformed)
			}
			return 0, malformed(off, "truncated value")
		}
		start := off
		c := data[off]
		off++
		var (
			skip      int    // bytes of payload after the header
			head      int    // bytes of the header after the type byte
			elems     uint64 // values a container holds
			container bool
			what      string
		)
		switch {
		case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
		case c <= 0x8f: // fixmap
			container, elems, what = true, 2*uint64(c&0x0f), "map"
		case c <= 0x9f: // fixarray
			container, elems, what = true, uint64(c&0x0f), "array"
		case c <= 0xbf: // fixstr
			skip = int(c & 0x1f)
		case c == 0xc1:
			return 0, malformed(start, "invalid type byte 0xc1")
		case c <= 0xc6: // bin 8/16/32
			head, what = 1<<(c-0xc4), "bin"
		case c <= 0xc9: // ext 8/16/32: length, then the type byte
			head, skip, what = 1<<(c-0xc7), 1, "ext"
		case c == 0xca:
			skip = 4
		case c == 0xcb:
			skip = 8
		case c <= 0xcf: // uint 8..64
			skip = 1 << (c - 0xcc)
		case c <= 0xd3: // int 8..64
			skip = 1 << (c - 0xd0)
		case c <= 0xd8: // fixext 1..16, plus the type byte
			skip = 1 + 1<<(c-0xd4)
		case c <= 0xdb: // str 8/16/32
			head, what = 1<<(c-0xd9), "str"
		case c <= 0xdd: // array 16/32
			head, container, what = 2<<(c-0xdc), true, "array"
		default: // map 16/32
			head, container, what = 2<<(c-0xde), true, "map"
		}
		if head > 0 {
			if head > len(data)-off {
				return 0, malformed(start, "truncated %s header", what)
			}
			var n uint64
			for _, b := range data[off : off+head] {
				n = n<<8 | uint64(b)
			}
			off += head
			if container {
				elems = n
				if what == "map" {
					elems *= 2
				}
			} else {
				if left := len(data) - off - skip; left < 0 || n > uint64(left) {
					return 0, malformed(start, "%s of %d bytes, %d bytes left", what, n, max(left, 0))
				}
				skip += int(n)
			}
		}
		left := len(data) - off
		if container {
			if elems > uint64(left) {
				if what == "map" {
					return 0, malformed(start, "map of %d entries needs at least %d bytes, %d left", elems/2, elems, left)
				}
				return 0, malformed(start, "array of %d elements needs at least %d bytes, %d left", elems, elems, left)
			}
			if depth == MaxDepth {
				return 0, malformed(start, "containers nested more than %d deep", MaxDepth)
			}
			if elems > 0 {
				open[depth] = elems
				depth++
				continue
			}
		} else {
			if skip > left {
				return 0, malformed(start, "truncated value")
			}
			off += skip
		}
		// A value is complete: count it against the containers it closes.
		for depth > 0 {
			open[depth-1]--
			if open[depth-1] > 0 {
				break
			}
			depth--
		}
		if depth == 0 {
			return off, nil
		}
	}
}
