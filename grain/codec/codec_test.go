package codec_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/goleak"

	"github.com/granary-rt/granary/grain/codec"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type ints struct{ V []int64 }

type point struct {
	X, Y int64
	Name string
	At   time.Time
}

type points struct{ V []point }

type tick struct {
	Name string
	Due  time.Time
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// allocated returns the bytes f allocates.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestUnmarshalRejectsMalformed(t *testing.T) {
	deep := bytes.Repeat([]byte{0x91}, codec.MaxDepth+1)
	deep = append(deep, 0x01)
	for _, tc := range []struct {
		name, hex string
		raw       []byte
		into      func() any
		want      string
	}{
		{name: "empty", hex: "", into: func() any { return new(ints) }, want: "no value"},
		{name: "array 2^26 of int64", hex: "91 dd 04 00 00 00", into: func() any { return new(ints) }, want: "array of 67108864 elements"},
		{name: "array 2^32-1 of int64", hex: "91 dd ff ff ff ff", into: func() any { return new(ints) }, want: "array of 4294967295 elements"},
		{name: "array 2^32-1 top level", hex: "dd ff ff ff ff", into: func() any { return new([]int64) }, want: "array of 4294967295"},
		{name: "array 2^26 of structs", hex: "91 dd 04 00 00 00", into: func() any { return new(points) }, want: "array of 67108864"},
		{name: "map 2^32-1", hex: "df ff ff ff ff", into: func() any { return new(map[string]int) }, want: "map of 4294967295 entries"},
		{name: "fixmap short", hex: "81 a1 61", into: func() any { return new(map[string]int) }, want: "truncated"},
		{name: "str 4 GiB", hex: "db ff ff ff ff 61", into: func() any { return new(string) }, want: "str of 4294967295 bytes"},
		{name: "bin 4 GiB", hex: "c6 ff ff ff ff", into: func() any { return new([]byte) }, want: "bin of 4294967295 bytes"},
		{name: "ext 4 GiB", hex: "c9 ff ff ff ff ff", into: func() any { return new(any) }, want: "ext of 4294967295 bytes"},
		{name: "ext no type byte", hex: "c7 00", into: func() any { return new(any) }, want: "ext of 0 bytes, 0 bytes left"},
		{name: "truncated header", hex: "dd 00 00", into: func() any { return new([]int64) }, want: "truncated array header"},
		{name: "truncated int", hex: "cf 00 00", into: func() any { return new(int64) }, want: "truncated value"},
		{name: "invalid byte", hex: "92 01 c1", into: func() any { return new([]int64) }, want: "0xc1"},
		{name: "trailing", hex: "01 02", into: func() any { return new(int64) }, want: "1 trailing bytes"},
		{name: "too deep", raw: deep, into: func() any { return new(any) }, want: "nested more than 64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.raw
			if data == nil {
				data = unhex(t, tc.hex)
			}
			v := tc.into()
			var err error
			n := allocated(func() { err = codec.Unmarshal(data, v) })
			if !errors.Is(err, codec.ErrMalformed) {
				t.Fatalf("Unmarshal(% x) = %v, want an error wrapping ErrMalformed", data, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if n > 64<<10 {
				t.Errorf("Unmarshal(% x) allocated %d bytes, want < 64 KiB", data, n)
			}
		})
	}
}

// TestUnmarshalRecoversDecoderPanic: msgpack v5.4.1 panics decoding nil
// into a time.Time.
func TestUnmarshalRecoversDecoderPanic(t *testing.T) {
	var v tick
	err := codec.Unmarshal(unhex(t, "81 a3 44 75 65 c0"), &v)
	if err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("Unmarshal = %v, want the decoder's panic as an error", err)
	}
	if errors.Is(err, codec.ErrMalformed) {
		t.Errorf("%v wraps ErrMalformed; the bytes are well formed", err)
	}
}

func TestUnmarshalAcceptsWellFormed(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	nested := any(int64(1))
	for range codec.MaxDepth {
		nested = []any{nested}
	}
	for _, v := range []any{
		int64(0), int64(-1), int64(1 << 40), uint64(1<<64 - 1), 1.5, float32(2.5), true, nil,
		"", "héllo", strings.Repeat("x", 70000), []byte{}, bytes.Repeat([]byte{7}, 300),
		[]int64{}, []int64{1, -2, 3 << 33}, make([]int64, 70000),
		map[string]int{"a": 1, "b": 2}, map[string]any{},
		&points{V: []point{{X: 1, Y: 2, Name: "p", At: at}, {}}},
		tick{Name: "r", Due: at}, at, time.Time{},
		nested,
	} {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var out any
		if err := codec.Unmarshal(b, &out); err != nil {
			t.Errorf("Unmarshal(Marshal(%.40v)) = %v", v, err)
		}
	}
	var p points
	b, _ := msgpack.Marshal(&points{V: []point{{X: 1, Y: 2, Name: "p", At: at}}})
	if err := codec.Unmarshal(b, &p); err != nil || len(p.V) != 1 || p.V[0].Name != "p" || !p.V[0].At.Equal(at) {
		t.Fatalf("Unmarshal = %+v, %v", p, err)
	}
}

// TestUnmarshalAllocationBound: n bytes allocate O(n), also when every
// byte is an element.
func TestUnmarshalAllocationBound(t *testing.T) {
	const n = 1 << 16
	body := append([]byte{0x91, 0xdd, 0, 1, 0, 0}, make([]byte, n)...) // [[0, 0, ...]]
	var v ints
	got := allocated(func() {
		if err := codec.Unmarshal(body, &v); err != nil {
			t.Fatal(err)
		}
	})
	if len(v.V) != n {
		t.Fatalf("decoded %d elements, want %d", len(v.V), n)
	}
	if limit := uint64(16*len(body) + 64<<10); got > limit {
		t.Errorf("decoding %d bytes allocated %d, want <= %d", len(body), got, limit)
	}
}

func FuzzUnmarshal(f *testing.F) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, v := range []any{
		&points{V: []point{{X: 1, Y: -2, Name: "p", At: at}}}, &ints{V: []int64{1, 2}},
		map[string]any{"a": []any{1, "x", nil, 1.5}}, tick{Name: "n", Due: at},
	} {
		b, _ := msgpack.Marshal(v)
		f.Add(b)
	}
	f.Add(unhex(f, "91 dd 04 00 00 00"))
	f.Add(unhex(f, "81 a3 44 75 65 c0"))
	f.Fuzz(func(t *testing.T, data []byte) {
		n := allocated(func() {
			for _, v := range []any{new(any), new(points), new(ints), new(tick)} {
				_ = codec.Unmarshal(data, v)
			}
		})
		if limit := uint64(4 * (64*len(data) + 16<<10)); n > limit {
			t.Fatalf("Unmarshal(% x) allocated %d bytes, limit %d", data, n, limit)
		}
	})
}

func TestValueLen(t *testing.T) {
	for _, tc := range []struct {
		hex  string
		want int
	}{
		{"01 02", 1},
		{"92 01 a1 78 c0", 4},
		{"81 a1 61 90 ff", 4},
		{"c7 02 05 aa bb 00", 5},
		{"d4 01 02", 3},
	} {
		n, err := codec.ValueLen(unhex(t, tc.hex))
		if err != nil || n != tc.want {
			t.Errorf("ValueLen(%s) = %d, %v; want %d", tc.hex, n, err, tc.want)
		}
	}
	if _, err := codec.ValueLen(unhex(t, "dd ff ff ff ff 00")); !errors.Is(err, codec.ErrMalformed) {
		t.Errorf("ValueLen of a huge array = %v, want ErrMalformed", err)
	}
}
