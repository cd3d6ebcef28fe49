package runtime

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/granary-rt/granary/grain"
)

type sizeItem struct {
	Name  string `msgpack:"a_much_longer_wire_name_than_the_field"`
	N     int64
	At    time.Time
	Flags [3]bool
	Inner struct {
		S   string
		F   float64
		Dur time.Duration
	}
	hidden string //nolint:unused // unexported: not encoded
}

// sizeBound must never be below the encoding, or a call over the limit
// would pass in-process and fail remotely.
func TestSizeBoundIsABound(t *testing.T) {
	long := strings.Repeat("é", 70_000) // str32, multi-byte
	var it sizeItem
	it.Name, it.N, it.At, it.Inner.S, it.Inner.F = long, -1<<62, time.Date(2300, 1, 2, 3, 4, 5, 6, time.UTC), "x", 1.5
	values := []any{
		&grain.Args0{},
		&grain.Args1[int64]{V0: -1 << 63},
		&grain.Args1[uint64]{V0: 1<<64 - 1},
		&grain.Args1[string]{V0: ""},
		&grain.Args1[string]{V0: strings.Repeat("x", 31)},
		&grain.Args1[string]{V0: strings.Repeat("x", 300)},
		&grain.Args1[string]{V0: long},
		&grain.Args2[string, bool]{V0: long, V1: true},
		&grain.Args1[[4]string]{V0: [4]string{"a", long, "", "b"}},
		&grain.Args1[sizeItem]{V0: it},
		&grain.Reply[sizeItem]{V: sizeItem{}},
		&grain.Reply[time.Time]{V: time.Now()},
		&grain.Args3[float32, int8, time.Duration]{V0: 3.25, V1: -100, V2: time.Hour},
	}
	for _, v := range values {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		n, ok := sizeBound(reflect.ValueOf(v))
		if !ok || n < len(b) {
			t.Errorf("%T: bound %d (ok %v), encoded %d bytes", v, n, ok, len(b))
		}
		// checkSize agrees with the encoding at every limit around it.
		for _, limit := range []int{len(b) - 1, len(b), n} {
			got, over := checkSize(v, limit)
			if want := len(b) > limit; over != want || over && got != len(b) {
				t.Errorf("%T (%d bytes): checkSize(limit %d) = %d, %v", v, len(b), limit, got, over)
			}
		}
	}
	// Kinds a copy-free value does not have are encoded, never guessed.
	if _, ok := sizeBound(reflect.ValueOf(&grain.Args1[[]string]{})); ok {
		t.Error("sizeBound of a slice: ok")
	}
	if n, over := checkSize(&grain.Args1[[]string]{V0: []string{long}}, 1000); !over || n < len(long) {
		t.Errorf("checkSize of a large slice = %d, %v", n, over)
	}
}

// A copy-free call whose arguments fit costs no encoding.
func TestCheckSizeDoesNotEncode(t *testing.T) {
	args := &grain.Args2[string, int64]{V0: "alice", V1: 42}
	if n := testing.AllocsPerRun(100, func() { checkSize(args, DefaultMaxMessageSize) }); n > 1 {
		t.Errorf("checkSize allocates %v times: it encodes", n)
	}
}

func BenchmarkCheckSize(b *testing.B) {
	for _, bc := range []struct {
		name string
		v    any
	}{
		{"args=int64", &grain.Args1[int64]{V0: 1}},
		{"args=string,int64", &grain.Args2[string, int64]{V0: "alice", V1: 42}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				checkSize(bc.v, DefaultMaxMessageSize)
			}
		})
	}
}
