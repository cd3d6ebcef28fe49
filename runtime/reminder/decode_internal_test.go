package reminder

import (
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/granary-rt/granary/grain/codec/codectest"
)

// allocatedBy measures what a decode allocates.
var allocatedBy = codectest.AllocatedBy

var hostileRecords = map[string][]byte{
	// {"start": nil}: nil into time.Time panicked msgpack.
	"nil start": {0x81, 0xa5, 's', 't', 'a', 'r', 't', 0xc0},
	// {"name": str of 2^26 bytes}: msgpack allocated 1 MiB for it.
	"name 2^26":   {0x81, 0xa4, 'n', 'a', 'm', 'e', 0xdb, 0x04, 0x00, 0x00, 0x00},
	"key 2^32-1":  {0x81, 0xa3, 'k', 'e', 'y', 0xdb, 0xff, 0xff, 0xff, 0xff},
	"trailing":    {0x80, 0x00},
	"array 2^26":  {0xdd, 0x04, 0x00, 0x00, 0x00},
	"nested deep": append(append(make([]byte, 0, 200), repeat(0x91, 100)...), 0x01),
}

func repeat(b byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}

func TestDecodeEntryRejectsHostileRecords(t *testing.T) {
	for name, b := range hostileRecords {
		t.Run(name, func(t *testing.T) {
			var err error
			if alloc := allocatedBy(64<<10, func() { _, err = decodeEntry(b, 7) }); alloc > 64<<10 {
				t.Errorf("decodeEntry allocated %d bytes, want < 64 KiB", alloc)
			}
			if err == nil {
				t.Error("decodeEntry succeeded")
			}
		})
	}
}

func FuzzReminderRecord(f *testing.F) {
	b, err := msgpack.Marshal(&record{Type: "test.Clock", Key: "k", Name: "r", Start: time.Unix(100, 5).UTC(), Period: time.Minute})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	for _, b := range hostileRecords {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		limit := uint64(64*len(data) + 64<<10)
		if alloc := allocatedBy(limit, func() { _, _ = decodeEntry(data, 3) }); alloc > limit {
			t.Fatalf("decoding %d bytes allocated %d, limit %d", len(data), alloc, limit)
		}
	})
}
