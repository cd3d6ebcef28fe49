package grain

import (
	"errors"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/granary-rt/granary/grain/codec"
)

type hostileState struct {
	Owner   string
	History []int64
	Items   []hostileItem
	Opened  time.Time
}

type hostileItem struct {
	SKU   string
	Count int64
	At    time.Time
}

func allocatedBy(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestDecodeStateRejectsHostileBytes: stored state is untrusted. A 12-byte
// record must not allocate gigabytes, nor panic the decoder.
func TestDecodeStateRejectsHostileBytes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		data      []byte
		malformed bool
	}{
		// {"History": array of 2^26}
		{"history 2^26", []byte{0x81, 0xa7, 'H', 'i', 's', 't', 'o', 'r', 'y', 0xdd, 0x04, 0x00, 0x00, 0x00}, true},
		// {"Items": array of 2^26}
		{"items 2^26", []byte{0x81, 0xa5, 'I', 't', 'e', 'm', 's', 0xdd, 0x04, 0x00, 0x00, 0x00}, true},
		// {"Opened": nil}: the decoder panics
		{"opened nil", []byte{0x81, 0xa6, 'O', 'p', 'e', 'n', 'e', 'd', 0xc0}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v hostileState
			var err error
			n := allocatedBy(func() { err = decodeState(tc.data, &v) })
			if err == nil {
				t.Fatalf("decodeState(% x) succeeded", tc.data)
			}
			if got := errors.Is(err, codec.ErrMalformed); got != tc.malformed {
				t.Errorf("decodeState(% x) = %v; wraps ErrMalformed %v, want %v", tc.data, err, got, tc.malformed)
			}
			if n > 64<<10 {
				t.Errorf("decodeState(% x) allocated %d bytes, want < 64 KiB", tc.data, n)
			}
		})
	}
}

func FuzzDecodeState(f *testing.F) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	b, _ := msgpack.Marshal(&hostileState{Owner: "o", History: []int64{1, 2}, Items: []hostileItem{{SKU: "s", Count: 1, At: at}}, Opened: at})
	f.Add(b)
	for _, name := range []string{"testdata/state_v1_account.msgpack", "testdata/state_v1_profile.msgpack"} {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n := allocatedBy(func() {
			var v hostileState
			_ = decodeState(data, &v)
			var m map[string]any
			_ = decodeState(data, &m)
		})
		// decodeState may decode partial copies of data to find the field
		// to blame: a constant factor more than one decode.
		if limit := uint64(1024*len(data) + 256<<10); n > limit {
			t.Fatalf("decodeState(% x) allocated %d bytes, limit %d", data, n, limit)
		}
	})
}
