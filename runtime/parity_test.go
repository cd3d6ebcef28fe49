package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
)

// probeV2 is test.Probe as a caller built from another version of the
// interface knows it: with a method the silos' version does not have.
type probeV2 interface {
	Vanished(ctx context.Context) error
}

var (
	probeV2Vanished = grain.NewAction0("Vanished", probeV2.Vanished, grain.CopyFree)
	probeV2Type     = grain.NewType("test.Probe", probeV2Vanished)
	// nopeType is a grain type no silo hosts.
	nopePing = grain.NewAction0("Ping", probeV2.Vanished, grain.CopyFree)
	nopeType = grain.NewType("test.Nope", nopePing)
)

const paritySize = 16 << 10

// TestCallParity makes the same failing calls in-process (a silo's client,
// the grain on that silo), silo to silo (another silo's client) and from a
// client process (runtime.Connect), and checks that they fail alike: the
// same sentinel (errors.Is), the same outcome (grain.OutcomeOf), and a
// message that names the method by name.
func TestCallParity(t *testing.T) {
	f := startFanOut(t, 2, runtime.Config{MaxMessageSize: paritySize}, grain.WithPlacement(grain.PlacePreferLocal))
	client := connect(t, f, runtime.ClientConfig{MaxMessageSize: paritySize})
	big := strings.Repeat("x", paritySize+1)
	cases := []struct {
		name    string
		want    error // nil: the grain's own error
		outcome grain.Outcome
		method  string // the method the message must name
		call    func(ctx context.Context, c grain.Caller, key string) error
	}{
		{"unknown method", grain.ErrUnknownMethod, grain.OutcomeNotRun, "Vanished", func(ctx context.Context, c grain.Caller, key string) error {
			return probeV2Vanished.Call(ctx, grain.NewRef(c, probeV2Type, key))
		}},
		{"unknown grain type", grain.ErrUnknownGrainType, grain.OutcomeNotRun, "test.Nope", func(ctx context.Context, c grain.Caller, key string) error {
			return nopePing.Call(ctx, grain.NewRef(c, nopeType, key))
		}},
		{"arguments too large", grain.ErrTooLarge, grain.OutcomeNotRun, "Echo", func(ctx context.Context, c grain.Caller, key string) error {
			_, err := testgrains.NewProbeRef(c, key).Echo(ctx, []string{big})
			return err
		}},
		{"arguments too large, copy-free", grain.ErrTooLarge, grain.OutcomeNotRun, "Return", func(ctx context.Context, c grain.Caller, key string) error {
			return testgrains.NewProbeRef(c, key).Return(ctx, big)
		}},
		{"reply too large", grain.ErrTooLarge, grain.OutcomeFailed, "Items", func(ctx context.Context, c grain.Caller, key string) error {
			_, err := testgrains.NewProbeRef(c, key).Items(ctx, 1024)
			return err
		}},
		{"reply too large, copy-free", grain.ErrTooLarge, grain.OutcomeFailed, "Big", func(ctx context.Context, c grain.Caller, key string) error {
			_, err := testgrains.NewFannerRef(c, key).Big(ctx, paritySize+1)
			return err
		}},
		{"timeout", grain.ErrTimeout, grain.OutcomeUnknown, "Wait", func(ctx context.Context, c grain.Caller, key string) error {
			ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			return testgrains.NewProbeRef(c, key).Wait(ctx, "never opened")
		}},
		{"grain's error", testgrains.ErrDomain, grain.OutcomeFailed, "", func(ctx context.Context, c grain.Caller, key string) error {
			return testgrains.NewProbeRef(c, key).Fail(ctx)
		}},
		{"panic", grain.ErrPanic, grain.OutcomeFailed, "Panic", func(ctx context.Context, c grain.Caller, key string) error {
			return testgrains.NewProbeRef(c, key).Panic(ctx)
		}},
	}
	callers := []struct {
		name string
		c    grain.Caller
	}{
		{"in-process", f.Silos[0].Client()},
		{"silo-to-silo", f.Silos[1].Client()},
		{"client", client},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxT(t)
			texts := map[string]string{}
			for _, cl := range callers {
				key := strings.ReplaceAll(tc.name, " ", "-") + "-" + cl.name
				// Activate the grain on silo 0 (placement prefers the
				// caller's silo), so that only the caller differs.
				if err := testgrains.NewProbeRef(f.Silos[0].Client(), key).Ping(ctx); err != nil {
					t.Fatal(err)
				}
				if _, err := testgrains.NewFannerRef(f.Silos[0].Client(), key).Big(ctx, 1); err != nil {
					t.Fatal(err)
				}
				err := tc.call(ctx, cl.c, key)
				// The texts must be the same but for the key (and the
				// silo that answered, which some name).
				text := strings.ReplaceAll(fmt.Sprint(err), key, "KEY")
				for _, s := range f.Silos {
					text = strings.ReplaceAll(text, s.ID(), "SILO")
				}
				texts[cl.name] = text
				switch {
				case err == nil:
					t.Errorf("%s: no error", cl.name)
					continue
				case !errors.Is(err, tc.want):
					t.Errorf("%s: %v does not match %v", cl.name, err, tc.want)
				}
				if o := grain.OutcomeOf(err); o != tc.outcome {
					t.Errorf("%s: outcome %v, want %v (%v)", cl.name, o, tc.outcome, err)
				}
				if tc.method != "" && !strings.Contains(err.Error(), tc.method) {
					t.Errorf("%s: %q does not name the method %s", cl.name, err, tc.method)
				}
			}
			for _, cl := range callers {
				t.Logf("%-12s %s", cl.name, texts[cl.name])
			}
			if texts["in-process"] != texts["silo-to-silo"] || texts["in-process"] != texts["client"] {
				t.Errorf("the error reads differently in-process and remote")
			}
		})
	}
}

// TestReplyOverCallersLimit: a reply within the silo's message size limit
// but over its caller's fails the call as ran and failed, naming the
// method, not as "did not run".
func TestReplyOverCallersLimit(t *testing.T) {
	f := startFanOut(t, 1, runtime.Config{})
	client := connect(t, f, runtime.ClientConfig{MaxMessageSize: paritySize})
	_, err := testgrains.NewProbeRef(client, "small-caller").Items(ctxT(t), 1024)
	if !errors.Is(err, grain.ErrTooLarge) || grain.OutcomeOf(err) != grain.OutcomeFailed || !strings.Contains(err.Error(), "test.Probe/small-caller.Items") {
		t.Fatalf("got %v (outcome %v), want ErrTooLarge, ran and failed, naming test.Probe/small-caller.Items", err, grain.OutcomeOf(err))
	}
	// Arguments over the caller's own limit never leave it.
	if _, err := testgrains.NewProbeRef(client, "small-caller").Echo(ctxT(t), []string{strings.Repeat("x", paritySize)}); !errors.Is(err, grain.ErrTooLarge) || grain.OutcomeOf(err) != grain.OutcomeNotRun {
		t.Fatalf("got %v, want ErrTooLarge, did not run", err)
	}
}

// TestLargerMessageSize: a limit above the 4 MiB default applies to every
// hop: a 5 MiB argument reaches a grain silo to silo and from a client
// (the silo's own transport client once kept the default).
func TestLargerMessageSize(t *testing.T) {
	const limit = 6 << 20
	f := startFanOut(t, 2, runtime.Config{MaxMessageSize: limit}, grain.WithPlacement(grain.PlacePreferLocal))
	client := connect(t, f, runtime.ClientConfig{MaxMessageSize: limit})
	ctx := ctxT(t)
	if err := testgrains.NewProbeRef(f.Silos[0].Client(), "large").Ping(ctx); err != nil {
		t.Fatal(err)
	}
	arg := []string{strings.Repeat("y", 5<<20)}
	for name, c := range map[string]grain.Caller{"in-process": f.Silos[0].Client(), "silo-to-silo": f.Silos[1].Client(), "client": client} {
		out, err := testgrains.NewProbeRef(c, "large").Echo(ctx, arg)
		if err != nil || len(out) != 1 || len(out[0]) != len("changed by grain") {
			t.Errorf("%s: Echo of 5 MiB with a 6 MiB limit: %d strings, %v", name, len(out), err)
		}
	}
}
