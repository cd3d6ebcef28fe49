package runtime

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/cluster"
	"github.com/granary-rt/granary/runtime/reminder"
)

// Reminder buckets spread over the silos (silo ids as NewSilo makes them:
// a common prefix and a few random hex digits), and a silo leaving moves
// only the buckets it owned.
func TestBucketOwnersSpread(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 20 {
		var active []cluster.SiloInfo
		for range 3 {
			active = append(active, cluster.SiloInfo{SiloID: fmt.Sprintf("silo-%012x", rng.Uint64()>>16)})
		}
		counts := map[string]int{}
		for b := range reminder.Buckets {
			owner, ok := ownerAmong(active, b)
			if !ok {
				t.Fatal("no owner with three active silos")
			}
			counts[owner.SiloID]++
			after, _ := ownerAmong(active[:2], b)
			if owner.SiloID != active[2].SiloID && after.SiloID != owner.SiloID {
				t.Fatalf("trial %d: bucket %d moved from %s to %s when another silo left", trial, b, owner.SiloID, after.SiloID)
			}
		}
		for _, si := range active {
			if n := counts[si.SiloID]; n < 50 {
				t.Fatalf("trial %d: buckets per silo %v: %s owns %d of %d", trial, counts, si.SiloID, n, reminder.Buckets)
			}
		}
	}
}

// A tick is tried again when it did not reach the grain (or may not have);
// a grain's own failure, or a grain that takes no reminders, counts as
// delivered.
func TestUndeliveredTicks(t *testing.T) {
	for _, err := range []error{grain.ErrSiloUnavailable, grain.ErrActivationFailed, grain.ErrOverloaded,
		grain.ErrTimeout, fmt.Errorf("call: %w", grain.ErrUnknownGrainType), grain.ErrOutcomeUnknown} {
		if !undelivered(err) {
			t.Errorf("undelivered(%v) = false, want a retry", err)
		}
	}
	for _, err := range []error{errors.New("grain says no"), grain.ErrPanic, grain.ErrUnknownMethod, grain.ErrBadRequest} {
		if undelivered(err) {
			t.Errorf("undelivered(%v) = true, want it counted as delivered", err)
		}
	}
}
