package transport

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/granary-rt/granary/grain"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpus of FuzzDecodeFrame in testdata/fuzz")

// fuzzLimits are small, so that the fuzzer reaches the limit checks.
func fuzzLimits() Limits {
	l := Limits{MaxFrameSize: 1 << 20, MaxBodySize: 1 << 10, MaxHeaderSize: 1 << 10, MaxEnvelopesPerFrame: 16}
	if err := l.validate("fuzz"); err != nil {
		panic(err)
	}
	return l
}

// fuzzSeeds are the seed corpus of FuzzDecodeFrame: frames made by the
// encoder, and malformed ones. Encodings must be deterministic (at most one
// context entry per envelope).
func fuzzSeeds() map[string][]byte {
	req := &Envelope{Kind: KindRequest, ID: 1, Target: grain.ID{Type: "bank.Account", Key: "42"}, Method: "Deposit", Fingerprint: 0xfedcba9876543210,
		Flags: grain.ReadOnly, Timeout: 2 * time.Second, Hops: 1, Chain: []string{"bank.Ledger/main"},
		Context: map[string]string{"trace": "abc"}, Body: []byte{0x91, 0x2a}}
	oneWay := &Envelope{Kind: KindOneWay, ID: 2, Target: grain.ID{Type: "t", Key: "k"}, Method: "Notify", Flags: grain.OneWay, Body: []byte("x")}
	ok := &Envelope{Kind: KindResponse, ID: 3, Body: []byte{0x2a}}
	fail := &Envelope{Kind: KindResponse, ID: 4, Status: StatusError, ErrCode: "overloaded", ErrMessage: "grain: overloaded"}
	notHere := &Envelope{Kind: KindResponse, ID: 5, Status: StatusNotHere, Redirect: Redirect{SiloID: "silo-1", Address: "127.0.0.1:7001"}}
	big := &Envelope{Kind: KindRequest, ID: 300, Target: grain.ID{Type: "T", Key: string(bytes.Repeat([]byte("k"), 40))},
		Method: string(bytes.Repeat([]byte("m"), MaxMethodName)), Fingerprint: 70000, Timeout: time.Hour, Body: bytes.Repeat([]byte{7}, 300)}
	enc := func(envs ...*Envelope) []byte { return appendFrame(nil, envs) }
	valid := enc(req, oneWay, ok, fail, notHere)
	return map[string][]byte{
		"valid-request":      enc(req),
		"valid-one-way":      enc(oneWay),
		"valid-responses":    enc(ok, fail, notHere),
		"valid-mixed":        valid,
		"valid-big":          enc(big),
		"valid-empty":        enc(),
		"bad-truncated":      valid[:len(valid)-3],
		"bad-trailing":       append(enc(ok), 0xc0),
		"bad-garbage":        []byte("\xc1not msgpack at all"),
		"bad-version":        {0x92, 0x03, 0x90},
		"bad-old-version":    oldFrame(),
		"bad-method-index":   frameOf(oldRequest()),
		"bad-method-name":    frameOf(appendEnvelope(nil, &Envelope{Kind: KindRequest, ID: 15, Target: grain.ID{Type: "T"}, Method: "A\x00B"})),
		"bad-unknown-kind":   frameOf([]byte{0x92, 0x07, 0x0b}),
		"bad-missing-target": frameOf(appendEnvelope(nil, &Envelope{Kind: KindRequest, ID: 12})),
		"bad-body-too-large": frameOf(appendEnvelope(nil, &Envelope{Kind: KindRequest, ID: 13, Target: grain.ID{Type: "T"}, Method: "M", Body: make([]byte, 1100)})),
		"bad-field-types":    frameOf([]byte{0x9c, 0x01, 0x0e, 0x07, 0x07, 0xa1, 'x', 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0}),
		"bad-deep":           frameOf(append(append([]byte{0x93, 0x01, 0x01}, bytes.Repeat([]byte{0x91}, 40)...), 0x00)),
		"bad-huge-length":    {0x92, frameVersion, 0xdd, 0xff, 0xff, 0xff, 0xff, 0x90},
		"valid-cancels":      enc(req, newCancel(7), newCancel(1<<40)),
		"valid-extra-field":  {0x94, frameVersion, 0x90, 0xc0, 0x01},
		"bad-cancel-type":    {0x93, frameVersion, 0x90, 0x91, 0xa1, 'x'},
		"bad-cancel-count":   append([]byte{0x93, frameVersion, 0x90, 0xdc, 0x00, 17}, bytes.Repeat([]byte{0x01}, 17)...),
		"bad-ext-and-floats": frameOf([]byte{0x94, 0x03, 0x01, 0xd4, 0x01, 0x02, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0}),
	}
}

// oldRequest is a request as frame version 1 encoded it: 11 fields, the
// method an index.
func oldRequest() []byte {
	return raw([]byte{0x9b, 0x01, 0x07, 0xa1, 'T', 0xa1, 'k', 0x03, 0x00, 0x00, 0x00, 0xc0, 0xc0, 0xc0})
}

// oldFrame is a version-1 frame holding oldRequest.
func oldFrame() []byte { return raw([]byte{0x92, 0x01, 0x91}, oldRequest()) }

func corpusFile(data []byte) []byte {
	return []byte("go test fuzz v1\n[]byte(" + strconv.Quote(string(data)) + ")\n")
}

// TestFuzzSeedCorpus keeps the checked-in seed corpus in step with
// fuzzSeeds; run with -update-corpus to rewrite it.
func TestFuzzSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeFrame")
	for name, data := range fuzzSeeds() {
		path := filepath.Join(dir, name)
		want := corpusFile(data)
		if *updateCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%v (run go test -run TestFuzzSeedCorpus -update-corpus)", err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale (run go test -run TestFuzzSeedCorpus -update-corpus)", path)
		}
	}
}

func FuzzDecodeFrame(f *testing.F) {
	for _, data := range fuzzSeeds() {
		f.Add(data)
	}
	lim := fuzzLimits()
	f.Fuzz(func(t *testing.T, data []byte) {
		d := newFrameDecoder(lim)
		if err := d.decode(data); err != nil {
			return
		}
		for _, b := range d.bad {
			if !errors.Is(b.err, grain.ErrBadRequest) && !errors.Is(b.err, grain.ErrTooLarge) {
				t.Fatalf("rejected envelope with error %v, want ErrBadRequest or ErrTooLarge", b.err)
			}
		}
		// Whatever was accepted passes the sender's checks, and survives a
		// round trip through the encoder.
		envs := d.envs
		for _, e := range envs {
			id := e.ID
			if err := checkEnvelope(e, &lim); err != nil {
				t.Fatalf("accepted envelope %+v fails checkEnvelope: %v", e, err)
			}
			if e.ID != id {
				t.Fatal("checkEnvelope changed the id")
			}
		}
		if len(envs) > lim.MaxEnvelopesPerFrame {
			t.Fatalf("accepted %d envelopes, limit %d", len(envs), lim.MaxEnvelopesPerFrame)
		}
		if len(d.cancels) > lim.MaxEnvelopesPerFrame {
			t.Fatalf("accepted %d cancellations, limit %d", len(d.cancels), lim.MaxEnvelopesPerFrame)
		}
		out := append([]*Envelope(nil), envs...)
		for _, id := range d.cancels {
			out = append(out, newCancel(id))
		}
		total := 0
		for _, e := range out {
			total += e.size
		}
		frame := appendFrame(nil, out)
		if n, c := frameSize(out, total); len(frame) != n || c != len(d.cancels) {
			t.Fatalf("re-encoded frame is %d bytes with %d cancellations; frameSize says %d, %d", len(frame), len(d.cancels), n, c)
		}
		again := newFrameDecoder(lim)
		if err := again.decode(frame); err != nil {
			t.Fatalf("re-encoded frame does not decode: %v", err)
		}
		if !slices.Equal(again.cancels, d.cancels) {
			t.Fatalf("cancellations changed in a round trip: %v, then %v", d.cancels, again.cancels)
		}
		if len(again.envs) != len(envs) || len(again.bad) != 0 {
			t.Fatalf("re-encoded frame: %d envelopes and %d rejected, want %d and 0", len(again.envs), len(again.bad), len(envs))
		}
		for i := range envs {
			if !equalEnvelope(again.envs[i], envs[i]) {
				t.Fatalf("envelope %d changed in a round trip:\n%+v\n%+v", i, envs[i], again.envs[i])
			}
		}
	})
}
