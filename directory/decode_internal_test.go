package directory

import (
	"errors"
	"math"
	"runtime"
	"testing"

	"github.com/granary-rt/granary/grain/codec"
)

// allocatedBy returns the bytes f allocates: the least of up to 5 runs,
// stopping at the first within limit. The process runs an embedded etcd
// whose allocations count too; the minimum leaves them out.
func allocatedBy(limit uint64, f func()) uint64 {
	least := uint64(math.MaxUint64)
	for range 5 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		least = min(least, after.TotalAlloc-before.TotalAlloc)
		if least <= limit {
			break
		}
	}
	return least
}

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
