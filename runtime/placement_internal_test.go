package runtime

import (
	"fmt"
	"testing"
	"time"

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

// Between two announcements, a placing silo counts what it placed itself:
// new grains share the least-loaded silos instead of all going to the one
// that announced the fewest. Its own count is its exact one.
func TestLeastActivationsCountsWhatItPlaced(t *testing.T) {
	var l loadEstimate
	cands := silos(100, 10, 14) // s0 is the placing silo, with 12 activations now
	local := 12
	got := map[string]int{}
	for range 30 {
		c := l.place("s0", func() int { return local }, cands)
		if c.SiloID == "s0" {
			local++ // the activation this silo creates
		}
		got[c.SiloID]++
	}
	// 10+a = 12+b = 14+c, a+b+c = 30: a = 12, b = 10, c = 8 (give or take
	// the tie-breaking of the last round).
	for id, want := range map[string]int{"s1": 12, "s0": 10, "s2": 8} {
		if got[id] < want-1 || got[id] > want+1 {
			t.Fatalf("30 placements: %v; want about s1 12, s0 10, s2 8", got)
		}
	}
	// A new announcement replaces the estimate: what was placed before
	// it is in the announced count.
	cands[1].Activations, cands[2].Activations, local = 50, 10, 50
	if c := l.place("s0", func() int { return local }, cands); c.SiloID != "s2" {
		t.Fatalf("after s2 announced 10 and the others 50: placed on %s", c.SiloID)
	}
	// What it placed on a silo that announces nothing new is forgotten
	// after the window: that silo's count may have stayed level.
	l = loadEstimate{window: 20 * time.Millisecond}
	cands[1].Activations, cands[2].Activations, local = 10, 10, 100
	for range 10 {
		l.place("s0", func() int { return local }, cands[:2])
	}
	if got := l.m["s1"].placed; got != 10 {
		t.Fatalf("placed 10 on s1, counted %d", got)
	}
	time.Sleep(30 * time.Millisecond)
	l.place("s0", func() int { return local }, cands[:2])
	if got := l.m["s1"].placed; got != 1 {
		t.Fatalf("after the window, s1 counts %d placed; want 1 (the new one)", got)
	}
}
