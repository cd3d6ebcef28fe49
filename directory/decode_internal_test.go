package directory

import (
	"errors"
	"testing"

	"github.com/granary-rt/granary/grain/codec"
	"github.com/granary-rt/granary/grain/codec/codectest"
)

// allocatedBy measures what a decode allocates.
var allocatedBy = codectest.AllocatedBy

var hostileEntries = map[string][]byte{
	// {"s": str of 2^26 bytes}: msgpack allocated 1 MiB for it.
	"silo 2^26":   {0x81, 0xa1, 's', 0xdb, 0x04, 0x00, 0x00, 0x00},
	"silo 2^32-1": {0x81, 0xa1, 's', 0xdb, 0xff, 0xff, 0xff, 0xff},
	"addr 2^26":   {0x81, 0xa1, 'a', 0xdb, 0x04, 0x00, 0x00, 0x00},
	"trailing":    {0x81, 0xa1, 's', 0xa1, 'x', 0x00},
	"0xc1":        {0x81, 0xa1, 's', 0xc1},
}

func TestDecodeEntryRejectsHostileBytes(t *testing.T) {
	for name, b := range hostileEntries {
		t.Run(name, func(t *testing.T) {
			var err error
			if alloc := allocatedBy(64<<10, func() { _, err = decodeEntry(b) }); alloc > 64<<10 {
				t.Errorf("decodeEntry allocated %d bytes, want < 64 KiB", alloc)
			}
			if !errors.Is(err, codec.ErrMalformed) {
				t.Errorf("decodeEntry = %v, want an error wrapping codec.ErrMalformed", err)
			}
		})
	}
}

func FuzzDirectoryEntry(f *testing.F) {
	b, err := encodeEntry(Entry{SiloID: "s1", Address: "127.0.0.1:7000", Incarnation: 12, ActivationID: 1 << 40})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	for _, b := range hostileEntries {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		limit := uint64(64*len(data) + 64<<10)
		if alloc := allocatedBy(limit, func() { _, _ = decodeEntry(data) }); alloc > limit {
			t.Fatalf("decoding %d bytes allocated %d, limit %d", len(data), alloc, limit)
		}
	})
}
