package grain_test

import (
	"context"
	"errors"
	"testing"

	"github.com/granary-rt/granary/grain"
)

func TestCallerIdentity(t *testing.T) {
	if id, ok := grain.CallerIdentity(context.Background()); ok || id != (grain.Identity{}) {
		t.Fatalf("no identity: %+v %v", id, ok)
	}
	alice := grain.Identity{Name: "alice", Scheme: "token"}
	ctx := grain.WithCallerIdentity(context.Background(), alice)
	if id, ok := grain.CallerIdentity(ctx); !ok || id != alice {
		t.Fatalf("CallerIdentity = %+v %v, want %+v", id, ok, alice)
	}
	// Derived contexts keep it; an empty name is no identity.
	child, cancel := context.WithCancel(ctx)
	defer cancel()
	if id, _ := grain.CallerIdentity(child); id != alice {
		t.Fatalf("derived context: %+v", id)
	}
	if _, ok := grain.CallerIdentity(grain.WithCallerIdentity(ctx, grain.Identity{Scheme: "x"})); ok {
		t.Fatal("an identity without a name counts")
	}
}

// The new sentinels did not run, and survive the wire.
func TestAuthErrorsAcrossTheWire(t *testing.T) {
	for _, e := range []*grain.CodedError{grain.ErrUnauthenticated, grain.ErrPermissionDenied} {
		if o := grain.OutcomeOf(e); o != grain.OutcomeNotRun {
			t.Errorf("%v: outcome %v, want did not run", e, o)
		}
		re := &grain.RemoteError{Code: grain.CodeOf(e), Message: "gateway: " + e.Error()}
		if !errors.Is(re, e) || grain.OutcomeOf(re) != grain.OutcomeNotRun {
			t.Errorf("remote %s: errors.Is %v, outcome %v", e.Code(), errors.Is(re, e), grain.OutcomeOf(re))
		}
	}
}
