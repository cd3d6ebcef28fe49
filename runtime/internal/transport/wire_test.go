package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/granary-rt/granary/grain"
)

// testLimits are generous limits for wire tests.
func testLimits() Limits {
	l := Limits{MaxFrameSize: 64 << 20, MaxBodySize: 16 << 20, MaxHeaderSize: 1 << 20}
	if err := l.validate("test"); err != nil {
		panic(err)
	}
	return l
}

// encodeFrame encodes envs, which must be valid, the way a writer does.
func encodeFrame(tb testing.TB, envs ...*Envelope) []byte {
	tb.Helper()
	lim := testLimits()
	total := 0
	for _, e := range envs {
		id := e.ID
		e.ID = 0
		if err := checkEnvelope(e, &lim); err != nil {
			tb.Fatalf("checkEnvelope(%+v): %v", e, err)
		}
		e.setID(id)
		total += e.size
	}
	b := appendFrame(nil, envs)
	if want := frameHeaderSize(len(envs)) + total; len(b) != want {
		tb.Fatalf("encoded frame is %d bytes, encodedSize says %d", len(b), want)
	}
	return b
}

// sampleEnvelopes covers every field and the size classes of the msgpack
// encodings.
func sampleEnvelopes() []*Envelope {
	envs := []*Envelope{
		{Kind: KindRequest, ID: 1, Target: grain.ID{Type: "bank.Account", Key: "42"}, Method: "Withdraw", Fingerprint: 0xfedcba9876543210,
			Flags: grain.ReadOnly, Timeout: 1500 * time.Millisecond, Hops: 2,
			Chain: []string{"bank.Ledger/main", "bank.Account/7"}, Context: map[string]string{"trace": "abc", "user": "ann"},
			Body: []byte{0x92, 0x01, 0x02}},
		{Kind: KindOneWay, ID: 2, Target: grain.ID{Type: "t", Key: ""}, Method: "Notify", Flags: grain.OneWay},
		{Kind: KindResponse, ID: 3, Status: StatusOK, Body: []byte("result")},
		{Kind: KindResponse, ID: 4, Status: StatusError, ErrCode: "overloaded", ErrMessage: "grain: overloaded"},
		{Kind: KindResponse, ID: 5, Status: StatusNotHere, Redirect: Redirect{SiloID: "silo-1", Address: "10.0.0.1:7000"}},
		{Kind: KindResponse, ID: math.MaxUint64, Status: StatusNotHere},
	}
	for i, n := range []int{1, 31, 32, 255, 256, 65535, 65536, 70000} {
		envs = append(envs, &Envelope{
			Kind: KindRequest, ID: uint64(1) << (i * 8 % 64), Target: grain.ID{Type: strings.Repeat("T", min(n, 300)), Key: strings.Repeat("k", n)},
			Method: strings.Repeat("m", min(n, MaxMethodName)), Fingerprint: uint64(n) << (i * 8 % 64), Flags: grain.MethodFlags(n), Timeout: time.Duration(n) * time.Hour, Hops: uint8(n),
			Chain: make([]string, n%17), Context: sampleContext(n % 18), Body: bytes.Repeat([]byte{byte(n)}, n),
		})
		envs = append(envs, &Envelope{Kind: KindResponse, ID: uint64(n), Body: bytes.Repeat([]byte{1}, n), ErrMessage: strings.Repeat("m", n)})
	}
	return envs
}

func sampleContext(n int) map[string]string {
	if n == 0 {
		return nil
	}
	m := make(map[string]string, n)
	for i := range n {
		m[fmt.Sprint("k", i)] = strings.Repeat("v", i)
	}
	return m
}

// equalEnvelope compares the exported fields, treating nil and empty alike.
func equalEnvelope(a, b *Envelope) bool {
	x, y := *a, *b
	x.size, y.size = 0, 0
	for _, e := range []*Envelope{&x, &y} {
		if len(e.Body) == 0 {
			e.Body = nil
		}
		if len(e.Chain) == 0 {
			e.Chain = nil
		}
		if len(e.Context) == 0 {
			e.Context = nil
		}
	}
	return reflect.DeepEqual(x, y)
}

func TestFrameRoundTrip(t *testing.T) {
	envs := sampleEnvelopes()
	b := encodeFrame(t, envs...)
	d := newFrameDecoder(testLimits())
	if err := d.decode(b); err != nil {
		t.Fatal(err)
	}
	if len(d.bad) != 0 {
		t.Fatalf("rejected: %+v", d.bad)
	}
	if len(d.envs) != len(envs) {
		t.Fatalf("decoded %d envelopes, want %d", len(d.envs), len(envs))
	}
	for i := range envs {
		if !equalEnvelope(d.envs[i], envs[i]) {
			t.Errorf("envelope %d:\n got %+v\nwant %+v", i, d.envs[i], envs[i])
		}
	}
	// The decoded envelopes do not alias the frame.
	body := append([]byte(nil), d.envs[0].Body...)
	clear(b)
	if !bytes.Equal(d.envs[0].Body, body) || d.envs[0].Target.Type != "bank.Account" {
		t.Fatal("decoded envelope aliases the frame buffer")
	}
}

func TestEncodedSizeMatchesEncoding(t *testing.T) {
	for i, e := range sampleEnvelopes() {
		if got, want := len(appendEnvelope(nil, e)), e.encodedSize(); got != want {
			t.Errorf("envelope %d: encoded %d bytes, encodedSize %d", i, got, want)
		}
	}
	for _, v := range []int64{0, 1, 127, 128, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxInt64,
		-1, -32, -33, -128, -129, -32768, -32769, math.MinInt32, math.MinInt32 - 1, math.MinInt64} {
		b := appendInt(nil, v)
		if len(b) != intSize(v) {
			t.Errorf("appendInt(%d) is %d bytes, intSize %d", v, len(b), intSize(v))
		}
		r := &reader{b: b}
		if got, err := r.int(); err != nil || got != v || r.off != len(b) {
			t.Errorf("int() of %d = %d, %v", v, got, err)
		}
		var viaLib int64
		if err := msgpack.Unmarshal(b, &viaLib); err != nil || viaLib != v {
			t.Errorf("msgpack decodes appendInt(%d) as %d, %v", v, viaLib, err)
		}
	}
}

// wireRequest and wireResponse spell the envelope layout with struct tags, to
// show the frames are plain msgpack that any implementation can read and
// write.
type wireRequest struct {
	_msgpack struct{} `msgpack:",as_array"`
	Kind     uint8
	ID       uint64
	Type     string
	Key      string
	Method   string
	Print    uint64
	Flags    uint8
	Timeout  int64
	Hops     uint8
	Chain    []string
	Context  map[string]string
	Body     []byte
}

type wireResponse struct {
	_msgpack struct{} `msgpack:",as_array"`
	Kind     uint8
	ID       uint64
	Status   uint8
	Body     []byte
	Code     string
	Message  string
	SiloID   string
	Address  string
	Outcome  uint8
	Trailing string // a field added by a later version
}

// wireResponseV1 is a response as sent before err_outcome was appended.
type wireResponseV1 struct {
	_msgpack struct{} `msgpack:",as_array"`
	Kind     uint8
	ID       uint64
	Status   uint8
	Body     []byte
	Code     string
	Message  string
	SiloID   string
	Address  string
}

type wireFrame struct {
	_msgpack  struct{} `msgpack:",as_array"`
	Version   int
	Envelopes []msgpack.RawMessage
}

func TestFrameIsPlainMsgpack(t *testing.T) {
	req := &Envelope{Kind: KindRequest, ID: 9, Target: grain.ID{Type: "a.B", Key: "k"}, Method: "Get", Fingerprint: 42, Timeout: time.Second,
		Chain: []string{"x"}, Context: map[string]string{"a": "b"}, Body: []byte{1, 2, 3}}
	resp := &Envelope{Kind: KindResponse, ID: 10, Status: StatusError, ErrCode: "c", ErrMessage: "m"}

	// Ours, read by the library.
	var f wireFrame
	if err := msgpack.Unmarshal(encodeFrame(t, req, resp), &f); err != nil {
		t.Fatal(err)
	}
	var wr wireRequest
	if err := msgpack.Unmarshal(f.Envelopes[0], &wr); err != nil {
		t.Fatal(err)
	}
	if wr.Type != "a.B" || wr.Method != "Get" || wr.Print != 42 || wr.Timeout != int64(time.Second) || wr.Context["a"] != "b" || !bytes.Equal(wr.Body, []byte{1, 2, 3}) {
		t.Fatalf("library decoded %+v", wr)
	}

	// The library's, read by ours; the response has a trailing field.
	reqB, _ := msgpack.Marshal(&wireRequest{Kind: 1, ID: 7, Type: "a.B", Key: "k", Method: "Put", Print: 7, Timeout: 5, Chain: []string{"c"}, Body: []byte("x")})
	respB, _ := msgpack.Marshal(&wireResponse{Kind: 3, ID: 8, Status: 1, Code: "overloaded", Message: "busy",
		Outcome: uint8(grain.OutcomeUnknown), Trailing: "new"})
	respV1, _ := msgpack.Marshal(&wireResponseV1{Kind: 3, ID: 9, Status: 1, Code: "silo_unavailable", Message: "gone"})
	frame, err := msgpack.Marshal(&wireFrame{Version: 2, Envelopes: []msgpack.RawMessage{reqB, respB, respV1}})
	if err != nil {
		t.Fatal(err)
	}
	d := newFrameDecoder(testLimits())
	if err := d.decode(frame); err != nil {
		t.Fatal(err)
	}
	if len(d.envs) != 3 || len(d.bad) != 0 {
		t.Fatalf("decoded %d, rejected %+v", len(d.envs), d.bad)
	}
	want := &Envelope{Kind: KindRequest, ID: 7, Target: grain.ID{Type: "a.B", Key: "k"}, Method: "Put", Fingerprint: 7, Timeout: 5, Chain: []string{"c"}, Body: []byte("x")}
	if !equalEnvelope(d.envs[0], want) {
		t.Fatalf("got %+v, want %+v", d.envs[0], want)
	}
	if err := d.envs[1].Err(); !errors.Is(err, grain.ErrOverloaded) {
		t.Fatalf("response error %v does not match ErrOverloaded", err)
	}
	// The outcome the responder sent wins over its code's; a response
	// without one (an older peer) goes by the code.
	if o := grain.OutcomeOf(d.envs[1].Err()); o != grain.OutcomeUnknown {
		t.Fatalf("outcome %v, want the sent %v", o, grain.OutcomeUnknown)
	}
	if o := grain.OutcomeOf(d.envs[2].Err()); o != grain.OutcomeNotRun {
		t.Fatalf("outcome of an 8-field response %v, want %v", o, grain.OutcomeNotRun)
	}
}

// raw builds msgpack by hand for malformed-input tests.
func raw(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func frameOf(envs ...[]byte) []byte {
	return raw(append([][]byte{{0x92, frameVersion}, appendArrayHeader(nil, len(envs))}, envs...)...)
}

func TestDecodeRejects(t *testing.T) {
	lim := testLimits()
	lim.MaxBodySize = 16
	lim.MaxEnvelopesPerFrame = 4
	good := appendEnvelope(nil, &Envelope{Kind: KindRequest, ID: 1, Target: grain.ID{Type: "T", Key: "k"}, Method: "M"})
	// request fields after kind and id, valid
	reqTail := func(typ string, body []byte) []byte {
		return appendEnvelope(nil, &Envelope{Kind: KindRequest, ID: 1, Target: grain.ID{Type: typ}, Method: "M", Body: body})
	}

	frameErrors := map[string][]byte{
		"empty":              {},
		"garbage":            []byte("hello, world"),
		"not an array":       {0xa1, 'x'},
		"short frame":        {0x91, 0x01},
		"old version":        {0x92, 0x01, 0x90},
		"future version":     {0x92, 0x03, 0x90},
		"version type":       {0x92, 0xa1, 'x', 0x90},
		"envelopes not list": {0x92, frameVersion, 0x01},
		"truncated":          frameOf(good)[:len(frameOf(good))-1],
		"trailing bytes":     append(frameOf(good), 0x00),
		"too many":           frameOf(good, good, good, good, good),
		"invalid byte":       frameOf([]byte{0xc1}),
		"huge array header":  {0x92, frameVersion, 0xdd, 0xff, 0xff, 0xff, 0xff},
		"huge str":           frameOf([]byte{0x9c, 0x01, 0x01, 0xdb, 0xff, 0xff, 0xff, 0xff}),
		"too deep":           frameOf(append(append([]byte{0x93, 0x01, 0x01}, bytes.Repeat([]byte{0x91}, 100)...), 0x00)),
	}
	// A frame of version 1 is refused whole, saying why.
	if err := newFrameDecoder(lim).decode(oldFrame()); err == nil || !strings.Contains(err.Error(), "frame version 1, want 2") {
		t.Errorf("decode(version 1 frame) = %v, want an error naming both versions", err)
	}
	for name, b := range frameErrors {
		t.Run("frame/"+name, func(t *testing.T) {
			d := newFrameDecoder(lim)
			if err := d.decode(b); err == nil {
				t.Fatalf("decode(% x) = nil, want an error", b)
			}
		})
	}

	type want struct {
		known bool
		id    uint64
		err   error
	}
	envErrors := map[string]struct {
		env  []byte
		want want
	}{
		"not an array":    {[]byte{0x01}, want{false, 0, grain.ErrBadRequest}},
		"one field":       {[]byte{0x91, 0x01}, want{false, 0, grain.ErrBadRequest}},
		"kind not int":    {[]byte{0x92, 0xa1, 'x', 0x05}, want{false, 0, grain.ErrBadRequest}},
		"id not int":      {[]byte{0x92, 0x01, 0xa1, 'x'}, want{false, 0, grain.ErrBadRequest}},
		"unknown kind":    {[]byte{0x92, 0x07, 0x05}, want{true, 5, grain.ErrBadRequest}},
		"huge kind":       {[]byte{0x92, 0xcd, 0x01, 0x01, 0x05}, want{true, 5, grain.ErrBadRequest}},
		"missing fields":  {[]byte{0x93, 0x01, 0x05, 0xa1, 'T'}, want{true, 5, grain.ErrBadRequest}},
		"missing target":  {reqTail("", nil), want{true, 1, grain.ErrBadRequest}},
		"type not str":    {append([]byte{0x9c, 0x01, 0x06, 0x07}, good[5:]...), want{true, 6, grain.ErrBadRequest}},
		"body too large":  {reqTail("T", make([]byte, 17)), want{true, 1, grain.ErrTooLarge}},
		"negative id":     {[]byte{0x92, 0x01, 0xff}, want{false, 0, grain.ErrBadRequest}},
		"response status": {[]byte{0x98, 0x03, 0x09, 0x07, 0xc0, 0xa0, 0xa0, 0xa0, 0xa0}, want{true, 9, grain.ErrBadRequest}},
		"response short":  {[]byte{0x93, 0x03, 0x09, 0x00}, want{true, 9, grain.ErrBadRequest}},
		// A request of frame version 1 (its method an index) in a frame
		// of version 2 is not read as any method.
		"method index":     {oldRequest(), want{true, 7, grain.ErrBadRequest}},
		"method not UTF-8": {appendEnvelope(nil, &Envelope{Kind: KindRequest, ID: 8, Target: grain.ID{Type: "T"}, Method: "A\xffB"}), want{true, 8, grain.ErrBadRequest}},
		"method control":   {appendEnvelope(nil, &Envelope{Kind: KindRequest, ID: 8, Target: grain.ID{Type: "T"}, Method: "A\nB"}), want{true, 8, grain.ErrBadRequest}},
		"method empty":     {appendEnvelope(nil, &Envelope{Kind: KindRequest, ID: 8, Target: grain.ID{Type: "T"}}), want{true, 8, grain.ErrBadRequest}},
		"method too long":  {appendEnvelope(nil, &Envelope{Kind: KindRequest, ID: 8, Target: grain.ID{Type: "T"}, Method: strings.Repeat("m", MaxMethodName+1)}), want{true, 8, grain.ErrBadRequest}},
	}
	for name, tc := range envErrors {
		t.Run("envelope/"+name, func(t *testing.T) {
			d := newFrameDecoder(lim)
			// Each bad envelope sits between two good ones, which must survive.
			if err := d.decode(frameOf(good, tc.env, good)); err != nil {
				t.Fatalf("frame error %v, want only the envelope rejected", err)
			}
			if len(d.envs) != 2 || len(d.bad) != 1 {
				t.Fatalf("decoded %d, rejected %d; want 2 and 1", len(d.envs), len(d.bad))
			}
			b := d.bad[0]
			if b.known != tc.want.known || b.id != tc.want.id || !errors.Is(b.err, tc.want.err) {
				t.Fatalf("rejected %+v, want %+v", b, tc.want)
			}
		})
	}
}

func TestDecodeChainAndContextLimits(t *testing.T) {
	lim := testLimits()
	e := &Envelope{Kind: KindRequest, ID: 1, Target: grain.ID{Type: "T"}, Method: "M", Chain: make([]string, MaxChainLen+1)}
	b := frameOf(appendEnvelope(nil, e))
	d := newFrameDecoder(lim)
	if err := d.decode(b); err != nil {
		t.Fatal(err)
	}
	if len(d.bad) != 1 || !errors.Is(d.bad[0].err, grain.ErrTooLarge) {
		t.Fatalf("rejected %+v, want one ErrTooLarge", d.bad)
	}
	e = &Envelope{Kind: KindRequest, ID: 1, Target: grain.ID{Type: "T"}, Method: "M", Context: sampleContext(MaxContextLen + 1)}
	if err := d.decode(frameOf(appendEnvelope(nil, e))); err != nil {
		t.Fatal(err)
	}
	if len(d.bad) != 1 || !errors.Is(d.bad[0].err, grain.ErrTooLarge) {
		t.Fatalf("rejected %+v, want one ErrTooLarge", d.bad)
	}
}

func TestCheckEnvelope(t *testing.T) {
	lim := Limits{}
	if err := lim.validate("test"); err != nil {
		t.Fatal(err)
	}
	req := func(mod func(*Envelope)) *Envelope {
		e := &Envelope{Kind: KindRequest, Target: grain.ID{Type: "T", Key: "k"}, Method: "M"}
		mod(e)
		return e
	}
	tests := []struct {
		name string
		e    *Envelope
		want error
	}{
		{"ok", req(func(*Envelope) {}), nil},
		{"no kind", &Envelope{Target: grain.ID{Type: "T"}}, grain.ErrBadRequest},
		{"no type", req(func(e *Envelope) { e.Target.Type = "" }), grain.ErrBadRequest},
		{"no method", req(func(e *Envelope) { e.Method = "" }), grain.ErrBadRequest},
		{"long method", req(func(e *Envelope) { e.Method = strings.Repeat("m", MaxMethodName+1) }), grain.ErrBadRequest},
		{"max method", req(func(e *Envelope) { e.Method = strings.Repeat("m", MaxMethodName) }), nil},
		{"method with a newline", req(func(e *Envelope) { e.Method = "Get\nforged log line" }), grain.ErrBadRequest},
		{"method not UTF-8", req(func(e *Envelope) { e.Method = "Get\xff" }), grain.ErrBadRequest},
		{"reminder method", req(func(e *Envelope) { e.Method = grain.ReminderMethod }), nil},
		{"negative timeout", req(func(e *Envelope) { e.Timeout = -1 }), grain.ErrBadRequest},
		{"body", req(func(e *Envelope) { e.Body = make([]byte, lim.MaxBodySize+1) }), grain.ErrTooLarge},
		{"max body", req(func(e *Envelope) { e.Body = make([]byte, lim.MaxBodySize) }), nil},
		{"key", req(func(e *Envelope) { e.Target.Key = strings.Repeat("k", lim.MaxHeaderSize) }), grain.ErrTooLarge},
		{"chain", req(func(e *Envelope) { e.Chain = make([]string, MaxChainLen+1) }), grain.ErrTooLarge},
		{"context", req(func(e *Envelope) { e.Context = sampleContext(MaxContextLen + 1) }), grain.ErrTooLarge},
		{"status", &Envelope{Kind: KindResponse, Status: 9}, grain.ErrBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkEnvelope(tc.e, &lim)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("checkEnvelope = %v, want %v", err, tc.want)
			}
			if err == nil && tc.e.size != len(appendEnvelope(nil, tc.e)) {
				t.Fatalf("size %d, encoded %d", tc.e.size, len(appendEnvelope(nil, tc.e)))
			}
		})
	}
}

func TestLimitsValidate(t *testing.T) {
	for _, l := range []Limits{
		{MaxFrameSize: 1 << 20, MaxBodySize: 1 << 20},
		{MaxBodySize: -1},
		{MaxHeaderSize: 10},
	} {
		if err := l.validate("test"); err == nil {
			t.Errorf("validate(%+v) = nil, want an error", l)
		}
	}
	l := Limits{MaxFrameSize: 1 << 20}
	if err := l.validate("test"); err != nil || l.MaxBodySize != 256<<10 || l.MaxHeaderSize != 64<<10 {
		t.Errorf("validate small frame: %+v, %v", l, err)
	}
}

func TestEnvelopeErr(t *testing.T) {
	for _, sentinel := range []error{grain.ErrOverloaded, grain.ErrNotFound, errCustom} {
		err := NewErrorResponse(fmt.Errorf("wrapped: %w", sentinel)).Err()
		var re *grain.RemoteError
		if !errors.As(err, &re) || !errors.Is(err, sentinel) {
			t.Errorf("Err() = %#v, want a RemoteError matching %v", err, sentinel)
		}
	}
	if err := NewErrorResponse(fmt.Errorf("x: %w", grain.Timeout("y"))).Err(); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("timeout response %v does not match context.DeadlineExceeded", err)
	}
	err := NewNotHereResponse("s1", "a:1").Err()
	var nh *NotHereError
	if !errors.As(err, &nh) || !errors.Is(err, ErrNotHere) || nh.Redirect.Address != "a:1" {
		t.Errorf("not-here Err() = %v", err)
	}
	if err := NewResponse(nil).Err(); err != nil {
		t.Errorf("ok Err() = %v", err)
	}
	long := NewErrorResponse(errors.New(strings.Repeat("x", 100000)))
	if len(long.ErrMessage) != maxErrMessage {
		t.Errorf("long message kept %d bytes", len(long.ErrMessage))
	}
}
