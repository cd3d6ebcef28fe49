package transport

import (
	"errors"
	"testing"

	"google.golang.org/grpc/mem"

	"github.com/granary-rt/granary/grain"
	msgcodec "github.com/granary-rt/granary/grain/codec"
)

// TestCodecGenericPathRejectsHostileBytes: values other than frames decode
// through grain/codec too.
func TestCodecGenericPathRejectsHostileBytes(t *testing.T) {
	var tick grain.Tick
	if err := (codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0x81, 0xa3, 'D', 'u', 'e', 0xc0})}, &tick); err == nil {
		t.Error("nil into time.Time decoded")
	}
	var ints []int64
	err := (codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})}, &ints)
	if !errors.Is(err, msgcodec.ErrMalformed) {
		t.Errorf("array of 2^32-1 = %v, want an error wrapping codec.ErrMalformed", err)
	}
}
