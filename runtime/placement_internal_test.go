package runtime

import (
	"fmt"
	"testing"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/cluster"
)

func silos(acts ...int64) []cluster.SiloInfo {
	out := make([]cluster.SiloInfo, len(acts))
	for i, a := range acts {
		out[i] = cluster.SiloInfo{SiloID: fmt.Sprint("s", i), Activations: a}
	}
	return out
}

func TestPlacement(t *testing.T) {
	id := grain.ID{Type: "t", Key: "k"}
	cands := silos(30, 10, 20)
	for range 100 {
		if got := place(grain.PlaceLeastActivations, id, "", cands); got.SiloID != "s1" {
			t.Fatalf("least-activations picked %s, want s1", got.SiloID)
		}
		if got := place(grain.PlacePreferLocal, id, "s2", cands); got.SiloID != "s2" {
			t.Fatalf("prefer-local picked %s, want s2", got.SiloID)
		}
	}
	// Hash placement is stable and spreads keys.
	counts := map[string]int{}
	for i := range 3000 {
		k := grain.ID{Type: "t", Key: fmt.Sprint(i)}
		a, b := place(grain.PlaceHash, k, "", cands), place(grain.PlaceHash, k, "s0", cands)
		if a.SiloID != b.SiloID {
			t.Fatalf("hash placement of %s not stable: %s vs %s", k, a.SiloID, b.SiloID)
		}
		counts[a.SiloID]++
	}
	for _, c := range cands {
		if counts[c.SiloID] < 800 {
			t.Fatalf("hash placement uneven: %v", counts)
		}
	}
	// Removing a silo moves only the keys it held.
	moved := 0
	for i := range 3000 {
		k := grain.ID{Type: "t", Key: fmt.Sprint(i)}
		before := place(grain.PlaceHash, k, "", cands)
		after := place(grain.PlaceHash, k, "", cands[:2])
		if before.SiloID != after.SiloID && before.SiloID != "s2" {
			moved++
		}
	}
	if moved != 0 {
		t.Fatalf("%d keys moved that were not on the removed silo", moved)
	}
	// Random placement uses every silo; ties in least-activations too.
	seen := map[string]bool{}
	for range 200 {
		seen[place(grain.PlaceRandom, id, "", cands).SiloID] = true
		seen[place(grain.PlaceLeastActivations, id, "", silos(5, 5, 5)).SiloID+"-tie"] = true
	}
	if len(seen) != 6 {
		t.Fatalf("random placement or tie-breaking does not spread: %v", seen)
	}
}
