package runtime

import (
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/granary-rt/granary/grain/codec"
)

// deepCopy returns a copy of v that shares no memory with it, made by a
// msgpack round trip into a new value from newFn. In-process calls of
// methods that are not grain.CopyFree use it, so that caller and grain never
// share mutable memory, exactly as if the call had crossed the network.
func deepCopy(v any, newFn func() any) (any, error) {
	if newFn == nil {
		return v, nil
	}
	b, err := msgpack.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("runtime: encode %T: %w", v, err)
	}
	out := newFn()
	if err := codec.Unmarshal(b, out); err != nil {
		return nil, fmt.Errorf("runtime: decode %T: %w", out, err)
	}
	return out, nil
}
