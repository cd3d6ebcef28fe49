package grain_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/granary-rt/granary/grain"
)

func TestObserverSetExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := grain.NewObserverSet[string](time.Minute, 0)
		for _, o := range []string{"a", "b"} {
			if err := s.Subscribe(o); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(40 * time.Second)
		if err := s.Subscribe("a"); err != nil { // renews a only
			t.Fatal(err)
		}
		time.Sleep(30 * time.Second) // b is 70 s old, a 30 s
		got := notified(t, s)
		if !slices.Equal(got, []string{"a"}) {
			t.Fatalf("notified %v after b expired, want [a]", got)
		}
		if n := s.Len(); n != 1 {
			t.Fatalf("Len = %d, want 1", n)
		}
		time.Sleep(time.Minute)
		if n := s.Len(); n != 0 {
			t.Fatalf("Len = %d after a expired too, want 0", n)
		}
	})
}

func TestObserverSetNoExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := grain.NewObserverSet[string](0, 0)
		s.Subscribe("a")
		time.Sleep(1000 * time.Hour)
		if n := s.Len(); n != 1 {
			t.Fatalf("Len = %d, want 1: expiry 0 never expires", n)
		}
	})
}

func TestObserverSetDropsGone(t *testing.T) {
	s := grain.NewObserverSet[string](time.Hour, 0)
	for _, o := range []string{"ok", "gone", "flaky"} {
		s.Subscribe(o)
	}
	errFlaky := errors.New("flaky")
	fn := func(_ context.Context, o string) error {
		switch o {
		case "gone":
			// As a remote silo's answer arrives: wrapped.
			return fmt.Errorf("runtime: call: %w", grain.ErrObserverGone)
		case "flaky":
			return errFlaky
		}
		return nil
	}
	n, err := s.Notify(t.Context(), fn)
	if n != 1 || !errors.Is(err, errFlaky) || errors.Is(err, grain.ErrObserverGone) {
		t.Fatalf("Notify = %d, %v; want 1 delivered and the flaky error only", n, err)
	}
	got := s.Subscribers()
	slices.Sort(got)
	if !slices.Equal(got, []string{"flaky", "ok"}) {
		t.Fatalf("subscribers %v after a gone notification, want [flaky ok]: gone removed, other failures kept", got)
	}
	s.Unsubscribe("flaky")
	s.Unsubscribe("never-there")
	if got := s.Subscribers(); !slices.Equal(got, []string{"ok"}) {
		t.Fatalf("subscribers %v, want [ok]", got)
	}
}

func TestObserverSetBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := grain.NewObserverSet[int](time.Minute, 3)
		for i := range 3 {
			if err := s.Subscribe(i); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Subscribe(3); !errors.Is(err, grain.ErrOverloaded) {
			t.Fatalf("4th subscriber of a set of 3: %v, want ErrOverloaded", err)
		}
		if err := s.Subscribe(1); err != nil {
			t.Fatalf("renewing a member of a full set: %v", err)
		}
		time.Sleep(2 * time.Minute)
		if err := s.Subscribe(3); err != nil {
			t.Fatalf("subscribe once the others expired: %v", err)
		}
	})
}

func TestObserverSetDefaultBound(t *testing.T) {
	s := grain.NewObserverSet[int](0, 0)
	for i := range grain.DefaultObserverSetMax {
		if err := s.Subscribe(i); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Subscribe(-1); !errors.Is(err, grain.ErrOverloaded) {
		t.Fatalf("subscriber %d: %v, want ErrOverloaded", grain.DefaultObserverSetMax+1, err)
	}
}

func TestObserverSetNotifyManyFailures(t *testing.T) {
	s := grain.NewObserverSet[int](0, 0)
	for i := range 20 {
		s.Subscribe(i)
	}
	_, err := s.Notify(t.Context(), func(context.Context, int) error { return errors.New("x") })
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != 9 {
		t.Fatalf("Notify of 20 failures returned %v; want 8 errors and a count", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if n, err := s.Notify(ctx, func(context.Context, int) error { return nil }); n != 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("Notify with a cancelled ctx = %d, %v", n, err)
	}
}

func notified(t *testing.T, s *grain.ObserverSet[string]) []string {
	t.Helper()
	var got []string
	if _, err := s.Notify(t.Context(), func(_ context.Context, o string) error { got = append(got, o); return nil }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	return got
}

func TestObserverRefEncodes(t *testing.T) {
	in := struct {
		Subs []grain.ObserverRef
	}{Subs: []grain.ObserverRef{{Type: "lobby.ChatObserver", Silo: "silo-a", Key: "k1"}}}
	b, err := msgpack.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out struct{ Subs []grain.ObserverRef }
	if err := msgpack.Unmarshal(b, &out); err != nil || !slices.Equal(out.Subs, in.Subs) {
		t.Fatalf("round trip: %v, %v", out, err)
	}
}

func TestInvokeObserverChecks(t *testing.T) {
	td := grain.NewType("t.Obs", grain.NewAction0("Ping", obs.Ping, grain.OneWay))
	m := &td.Methods[0]
	if err := grain.InvokeObserver(t.Context(), nil, grain.ObserverRef{}, td, m, &grain.Args0{}); !errors.Is(err, grain.ErrObserverGone) {
		t.Fatalf("zero ref: %v", err)
	}
	ref := grain.ObserverRef{Type: "other.Obs", Silo: "s", Key: "k"}
	if err := grain.InvokeObserver(t.Context(), nil, ref, td, m, &grain.Args0{}); !errors.Is(err, grain.ErrBadRequest) {
		t.Fatalf("ref of another type: %v", err)
	}
	ref.Type = "t.Obs"
	if err := grain.InvokeObserver(t.Context(), nil, ref, td, m, &grain.Args0{}); !errors.Is(err, grain.ErrBadRequest) {
		t.Fatalf("nil caller: %v", err)
	}
	if o := grain.OutcomeOf(grain.ErrObserverGone); o != grain.OutcomeNotRun {
		t.Fatalf("outcome of ErrObserverGone: %v", o)
	}
}

type obs interface{ Ping(context.Context) error }
