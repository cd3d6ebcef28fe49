package grain_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/granary-rt/granary/grain"
)

type Price struct {
	Cents int64
}

type shop interface {
	Buy(ctx context.Context, item string, n int, at time.Time) (Price, error)
	Tags(ctx context.Context, tags []string, m map[string]*Price) ([]byte, error)
	Ping(ctx context.Context) error
}

type shopImpl struct{ pinged int }

func (s *shopImpl) Buy(ctx context.Context, item string, n int, at time.Time) (Price, error) {
	if n < 0 {
		return Price{}, errors.New("negative")
	}
	return Price{Cents: int64(len(item) * n)}, nil
}

func (s *shopImpl) Tags(ctx context.Context, tags []string, m map[string]*Price) ([]byte, error) {
	return []byte(strings.Join(tags, ",")), nil
}

func (s *shopImpl) Ping(ctx context.Context) error { s.pinged++; return nil }

var (
	shopBuy  = grain.NewMethod3("Buy", shop.Buy, grain.CopyFree)
	shopTags = grain.NewMethod2("Labels", shop.Tags, 0) // renamed on the wire
	shopPing = grain.NewAction0("Ping", shop.Ping, grain.OneWay)
	shopType = grain.NewType("test.Shop", shopBuy, shopTags, shopPing)
)

func TestSignatures(t *testing.T) {
	for _, tc := range []struct {
		m    *grain.MethodDesc
		want string
	}{
		{shopBuy.Desc(), "Buy(string, int, time.Time) (grain_test.Price, error)"},
		{shopTags.Desc(), "Labels([]string, map[string]*grain_test.Price) ([]uint8, error)"},
		{shopPing.Desc(), "Ping() error"},
	} {
		if got := tc.m.String(); got != tc.want {
			t.Errorf("signature = %q, want %q", got, tc.want)
		}
		if tc.m.Fingerprint != grain.Fingerprint(tc.m.Signature) || tc.m.Fingerprint == 0 {
			t.Errorf("%s: fingerprint %x is not that of its signature", tc.m.Name, tc.m.Fingerprint)
		}
	}
	if shopBuy.Desc().Flags != grain.CopyFree || shopPing.Desc().NewReply != nil || shopBuy.Desc().NewReply == nil {
		t.Error("flags or reply tuples wrong")
	}
}

// TestFingerprintIsStable pins the fingerprint function: processes of
// different releases compare fingerprints, so changing it breaks every
// rolling upgrade across the change.
func TestFingerprintIsStable(t *testing.T) {
	for sig, want := range map[string]uint64{
		"() error":                             0x8d133e3269c768c9,
		"(string, int64) (journal.Ack, error)": 0xe5ed9ef1fb397fbe,
	} {
		if got := grain.Fingerprint(sig); got != want {
			t.Errorf("Fingerprint(%q) = %016x, want %016x", sig, got, want)
		}
	}
}

func TestResolve(t *testing.T) {
	buy := shopBuy.Desc()
	if m, err := shopType.Resolve("Buy", buy.Fingerprint); err != nil || m != buy {
		t.Fatalf("Resolve(Buy) = %v, %v", m, err)
	}
	if m := shopType.Lookup("Tags"); m != nil {
		t.Fatalf("the Go name of a renamed method resolves: %v", m)
	}
	_, err := shopType.Resolve("Sell", 1)
	if !errors.Is(err, grain.ErrUnknownMethod) || err.Error() != "grain: unknown method: test.Shop has no method Sell" {
		t.Fatalf("unknown method: %v", err)
	}
	_, err = shopType.Resolve("Buy", grain.Fingerprint("(string) error"))
	if !errors.Is(err, grain.ErrIncompatible) || grain.OutcomeOf(err) != grain.OutcomeNotRun ||
		!strings.Contains(err.Error(), "test.Shop.Buy here is Buy(string, int, time.Time) (grain_test.Price, error)") {
		t.Fatalf("incompatible: %v (outcome %v)", err, grain.OutcomeOf(err))
	}
	if m, err := shopType.Resolve(grain.ReminderMethod, shopType.Lookup(grain.ReminderMethod).Fingerprint); err != nil || m.Name != grain.ReminderMethod {
		t.Fatalf("reminder method: %v, %v", m, err)
	}
	lit := &grain.TypeDesc{Name: "x", Methods: []grain.MethodDesc{{Name: "A"}}}
	if m := lit.Lookup("A"); m == nil || m.Name != "A" || lit.Lookup("B") != nil {
		t.Fatalf("Lookup on a literal TypeDesc: %v", m)
	}
}

func TestNewTypeRejectsDuplicateNames(t *testing.T) {
	defer func() {
		if p := recover(); p == nil || !strings.Contains(p.(string), "two methods with the wire name Buy") {
			t.Fatalf("panic = %v", p)
		}
	}()
	grain.NewType("test.Dup", shopBuy, grain.NewMethod3("Buy", shop.Buy, 0))
}

func TestMethodNamesAreChecked(t *testing.T) {
	for _, name := range []string{"", "$reminder", "has space", strings.Repeat("x", grain.MaxMethodName+1), "bad\xff"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewAction0(%q) did not panic", name)
				}
			}()
			grain.NewAction0(name, shop.Ping, 0)
		}()
	}
}

// fakeCaller dispatches like a remote silo: by name and fingerprint, with
// a msgpack round trip of arguments and reply.
type fakeCaller struct {
	impl shop
	wire [][]byte
}

func (f *fakeCaller) Invoke(ctx context.Context, call *grain.Call) (any, error) {
	b, err := msgpack.Marshal(call.Args)
	if err != nil {
		return nil, err
	}
	f.wire = append(f.wire, b)
	m, err := shopType.Resolve(call.Method.Name, call.Method.Fingerprint)
	if err != nil {
		return nil, err
	}
	args := m.NewArgs()
	if err := msgpack.Unmarshal(b, args); err != nil {
		return nil, err
	}
	reply, err := m.Invoke(ctx, f.impl, args)
	if err != nil || reply == nil {
		return nil, err
	}
	if b, err = msgpack.Marshal(reply); err != nil {
		return nil, err
	}
	f.wire = append(f.wire, b)
	out := m.NewReply()
	return out, msgpack.Unmarshal(b, out)
}

func TestTypedCalls(t *testing.T) {
	impl := &shopImpl{}
	c := &fakeCaller{impl: impl}
	ref := grain.NewRef(c, shopType, "s")
	ctx := context.Background()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	p, err := shopBuy.Call(ctx, ref, "abc", 2, at)
	if err != nil || p.Cents != 6 {
		t.Fatalf("Buy = %v, %v", p, err)
	}
	// The tuples stay msgpack arrays on the wire.
	wantArgs, _ := msgpack.Marshal([]any{"abc", 2, at})
	var reply []map[string]int64
	if err := msgpack.Unmarshal(c.wire[1], &reply); err != nil || len(reply) != 1 || reply[0]["Cents"] != 6 {
		t.Errorf("reply on the wire = %x (%v, %v), want the array [{Cents: 6}]", c.wire[1], reply, err)
	}
	if !bytes.Equal(c.wire[0], wantArgs) {
		t.Errorf("arguments on the wire = %x, want %x", c.wire[0], wantArgs)
	}
	if _, err := shopBuy.Call(ctx, ref, "abc", -1, at); err == nil || err.Error() != "negative" {
		t.Fatalf("Buy error = %v", err)
	}
	b, err := shopTags.Call(ctx, ref, []string{"a", "b"}, nil)
	if err != nil || string(b) != "a,b" {
		t.Fatalf("Labels = %q, %v", b, err)
	}
	if err := shopPing.Call(ctx, ref); err != nil || impl.pinged != 1 {
		t.Fatalf("Ping: %v, pinged %d", err, impl.pinged)
	}
	if n := testing.AllocsPerRun(100, func() { _ = shopPing.Call(ctx, grain.NewRef(nopCaller{}, shopType, "s")) }); n > 1 {
		t.Errorf("a call of an action with no parameters allocates %v times, want at most 1 (the Call)", n)
	}
}

type nopCaller struct{}

func (nopCaller) Invoke(context.Context, *grain.Call) (any, error) { return nil, nil }
