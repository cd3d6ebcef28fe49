package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"time"

	"github.com/granary-rt/granary/codegen/testdata/e2e/bank"
	"github.com/granary-rt/granary/grain"
)

// checkWire sends values of the common types through the generated
// bank.Wire reference and the fake silo, which encodes the arguments and
// the reply as the runtime does, and checks that the grain receives what
// was sent and the caller receives what the grain returned. It prints
// nothing; it returns every value that did not survive.
func checkWire(ctx context.Context, s *silo) error {
	w := &wire{}
	bank.RegisterWire(s, func(grain.Context) bank.Wire { return w })
	ref := bank.NewWireRef(s, "w")
	var errs []error
	check := func(what string, sent, got []any, reply, want any) {
		if len(got) != len(sent) {
			errs = append(errs, fmt.Errorf("%s: sent %d arguments, the grain received %d", what, len(sent), len(got)))
			return
		}
		for i := range sent {
			if d := diff(sent[i], got[i]); d != "" {
				errs = append(errs, fmt.Errorf("%s: argument %d: %s", what, i, d))
			}
		}
		if d := diff(want, reply); d != "" {
			errs = append(errs, fmt.Errorf("%s: reply: %s", what, d))
		}
	}
	echo := func(what string, v any, call func() (any, error)) {
		w.got = nil
		r, err := call()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
			return
		}
		check(what, []any{v}, w.got, r, v)
	}

	utc := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, t := range []time.Time{utc, utc.In(time.FixedZone("UTC+5:30", 5*3600+1800)), {}, time.Now(), time.Unix(-1, 999999999)} {
		echo("Time "+t.String(), t, func() (any, error) { return ref.Time(ctx, t) })
	}
	for _, d := range []time.Duration{0, 1500 * time.Millisecond, -time.Nanosecond, math.MaxInt64, math.MinInt64} {
		echo("Duration "+d.String(), d, func() (any, error) { return ref.Duration(ctx, d) })
	}
	for _, b := range [][]byte{nil, {}, []byte("bytes"), {0, 0xff, 0x80}, make([]byte, 70000)} {
		echo(fmt.Sprintf("Bytes len=%d nil=%t", len(b), b == nil), b, func() (any, error) { return ref.Bytes(ctx, b) })
	}
	for _, v := range [][]int{nil, {}, {1, -2, math.MaxInt64, math.MinInt64}} {
		echo(fmt.Sprintf("Ints %#v", v), v, func() (any, error) { return ref.Ints(ctx, v) })
	}
	for _, m := range []map[string]int{nil, {}, {"a": 1, "": 0, "ü": -1}} {
		echo(fmt.Sprintf("Map %#v", m), m, func() (any, error) { return ref.Map(ctx, m) })
	}
	five := 5
	for _, p := range []*int{nil, &five} {
		echo(fmt.Sprintf("Pointer nil=%t", p == nil), p, func() (any, error) { return ref.Pointer(ctx, p) })
	}
	for _, p := range []bank.Point{{}, {X: -1, Y: 2}} {
		echo(fmt.Sprintf("Struct %+v", p), p, func() (any, error) { return ref.Struct(ctx, p) })
	}

	// Several parameters of named types at once.
	w.got = nil
	labels := bank.Labels{"tier": "gold"}
	args := []any{bank.Money(-42), bank.Tags{"a", ""}, labels, bank.NewCode(1, 2)}
	r, err := ref.Named(ctx, args[0].(bank.Money), args[1].(bank.Tags), labels, args[3].(bank.Code))
	if err != nil {
		errs = append(errs, fmt.Errorf("Named: %w", err))
	} else {
		check("Named", args, w.got, r, labels)
	}

	// A type that encodes itself through pointer methods only.
	w.got = nil
	v1, v2 := bank.NewVersion(1, 2), bank.NewVersion(3, 4)
	args = []any{v1, []bank.Version{v2, {}}, [2]bank.Version{v2, v1}}
	if r, err := ref.Versions(ctx, v1, args[1].([]bank.Version), args[2].([2]bank.Version)); err != nil {
		errs = append(errs, fmt.Errorf("Versions: %w", err))
	} else {
		check("Versions", args, w.got, r, v1)
	}

	// Every kind in one struct, by value and by pointer.
	v := everything()
	want := v
	want.Skipped = "" // left out on purpose
	w.got = nil
	if got, err := ref.Everything(ctx, v); err != nil {
		errs = append(errs, fmt.Errorf("Everything: %w", err))
	} else {
		check("Everything", []any{want}, w.got, got, want)
	}
	w.got = nil
	if got, err := ref.EverythingPtr(ctx, &v); err != nil {
		errs = append(errs, fmt.Errorf("EverythingPtr: %w", err))
	} else {
		check("EverythingPtr", []any{&want}, w.got, got, &want)
	}
	w.got = nil
	if got, err := ref.EverythingPtr(ctx, nil); err != nil {
		errs = append(errs, fmt.Errorf("EverythingPtr(nil): %w", err))
	} else {
		check("EverythingPtr(nil)", []any{(*bank.Everything)(nil)}, w.got, got, (*bank.Everything)(nil))
	}
	return errors.Join(errs...)
}

func everything() bank.Everything {
	n := 7
	pn := &n
	v := bank.Everything{
		Bool: true, Int8: math.MinInt8, Int: -1, Uint64: math.MaxUint64,
		Float32: 1.5, Float64: math.SmallestNonzeroFloat64, String: "héllo\x00",

		At:    time.Date(2026, 3, 4, 5, 6, 7, 8, time.FixedZone("X", -3600)),
		Every: 90 * time.Minute,

		Bytes: []byte{1, 2, 3}, EmptyBytes: []byte{},
		Array: [4]byte{1, 0, 0, 1},
		Grid:  [2][2]int{{1, 2}, {3, 4}},

		Ints: []int{3, 2, 1}, EmptyInts: []int{},
		Map:      map[string]bank.Point{"o": {}, "p": {X: 1, Y: 1}},
		EmptyMap: map[int]string{},
		Nested:   map[string][]map[int]*bank.Point{"k": {nil, {}, {1: nil, 2: {X: 2}}}},

		Ptr:      &bank.Point{X: 9},
		PtrPtr:   &pn,
		Inner:    bank.Point{Y: -9},
		Points:   []bank.Point{{X: 1}, {Y: 1}},
		PtrSlice: []*bank.Point{nil, {X: 3}},

		Money:  bank.Money(100),
		Tags:   bank.Tags{},
		Labels: bank.Labels{"k": "v"},
		Code:   bank.NewCode(3, 4),
		Codes:  map[bank.Code]bank.Code{bank.NewCode(1, 0): bank.NewCode(0, 1)},
		ID:     grain.ID{Type: "bank.Account", Key: "alice"},
		Entry:  bank.Entry{At: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Amount: 5, Memo: "m"},

		Point:   bank.Point{X: 11, Y: 12},
		Skipped: "not sent",
	}
	v.Note = "through an unexported embedded struct"
	return v
}

// wire is the bank.Wire grain: it records its arguments and returns them.
type wire struct{ got []any }

func (w *wire) record(args ...any) { w.got = append(w.got, args...) }

func (w *wire) Time(ctx context.Context, t time.Time) (time.Time, error) { w.record(t); return t, nil }
func (w *wire) Duration(ctx context.Context, d time.Duration) (time.Duration, error) {
	w.record(d)
	return d, nil
}
func (w *wire) Bytes(ctx context.Context, b []byte) ([]byte, error) { w.record(b); return b, nil }
func (w *wire) Ints(ctx context.Context, s []int) ([]int, error)    { w.record(s); return s, nil }
func (w *wire) Pointer(ctx context.Context, p *int) (*int, error)   { w.record(p); return p, nil }
func (w *wire) Struct(ctx context.Context, p bank.Point) (bank.Point, error) {
	w.record(p)
	return p, nil
}
func (w *wire) Map(ctx context.Context, m map[string]int) (map[string]int, error) {
	w.record(m)
	return m, nil
}
func (w *wire) Named(ctx context.Context, m bank.Money, tags bank.Tags, labels bank.Labels, c bank.Code) (bank.Labels, error) {
	w.record(m, tags, labels, c)
	return labels, nil
}
func (w *wire) Everything(ctx context.Context, v bank.Everything) (bank.Everything, error) {
	w.record(v)
	return v, nil
}
func (w *wire) Versions(ctx context.Context, v bank.Version, vs []bank.Version, arr [2]bank.Version) (bank.Version, error) {
	w.record(v, vs, arr)
	return v, nil
}
func (w *wire) EverythingPtr(ctx context.Context, v *bank.Everything) (*bank.Everything, error) {
	w.record(v)
	return v, nil
}

// diff describes the first difference between what was sent and what was
// received, or returns "" if there is none. It compares as
// reflect.DeepEqual does, but for times: a time is received as the same
// instant, as msgpack delivers it, in the local time zone and without a
// monotonic clock reading; the zero time is received as the zero time.
// Nil and empty slices and maps differ: the wire keeps them apart.
func diff(sent, received any) string {
	return diffValue(reflect.ValueOf(sent), reflect.ValueOf(received), "v")
}

var timeType = reflect.TypeFor[time.Time]()

func diffValue(a, b reflect.Value, path string) string {
	differ := func(what string) string { return path + ": " + what }
	both := func() string { return differ(fmt.Sprintf("sent %#v, received %#v", a, b)) }
	switch {
	case a.IsValid() != b.IsValid():
		return differ(fmt.Sprintf("sent valid=%t, received valid=%t", a.IsValid(), b.IsValid()))
	case !a.IsValid():
		return ""
	case a.Type() != b.Type():
		return differ(fmt.Sprintf("sent a %s, received a %s", a.Type(), b.Type()))
	case a.Type() == timeType:
		x, y := a.Interface().(time.Time), b.Interface().(time.Time)
		if x.IsZero() && y != (time.Time{}) || !x.IsZero() && (!x.Equal(y) || y.Location() != time.Local || y != y.Round(0)) {
			return differ(fmt.Sprintf("sent %v, received %v", x, y))
		}
		return ""
	}
	switch a.Kind() {
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			if a.IsNil() != b.IsNil() {
				return differ(fmt.Sprintf("sent nil=%t, received nil=%t", a.IsNil(), b.IsNil()))
			}
			return ""
		}
		return diffValue(a.Elem(), b.Elem(), "(*"+path+")")
	case reflect.Slice, reflect.Map:
		if a.IsNil() != b.IsNil() || a.Len() != b.Len() {
			return differ(fmt.Sprintf("sent nil=%t len=%d, received nil=%t len=%d", a.IsNil(), a.Len(), b.IsNil(), b.Len()))
		}
		if a.Kind() == reflect.Map {
			for it := a.MapRange(); it.Next(); {
				k := fmt.Sprintf("%s[%#v]", path, it.Key())
				bv := b.MapIndex(it.Key())
				if !bv.IsValid() {
					return k + ": missing"
				}
				if d := diffValue(it.Value(), bv, k); d != "" {
					return d
				}
			}
			return ""
		}
		fallthrough
	case reflect.Array:
		for i := range a.Len() {
			if d := diffValue(a.Index(i), b.Index(i), fmt.Sprintf("%s[%d]", path, i)); d != "" {
				return d
			}
		}
		return ""
	case reflect.Struct:
		for i := range a.NumField() {
			if d := diffValue(a.Field(i), b.Field(i), path+"."+a.Type().Field(i).Name); d != "" {
				return d
			}
		}
		return ""
	}
	var same bool
	switch a.Kind() {
	case reflect.Bool:
		same = a.Bool() == b.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		same = a.Int() == b.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		same = a.Uint() == b.Uint()
	case reflect.Float32, reflect.Float64:
		same = a.Float() == b.Float()
	case reflect.String:
		same = a.String() == b.String()
	default:
		return differ("cannot compare a " + a.Kind().String())
	}
	if !same {
		return both()
	}
	return ""
}
