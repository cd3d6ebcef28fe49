package runtime

import (
	"hash/fnv"
	"math/rand/v2"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/cluster"
)

// place picks the silo for a new activation of id among candidates (the
// active silos hosting its type, sorted by id) with strategy p. self is the
// silo doing the placing ("" for a client). candidates must not be empty.
func place(p grain.Placement, id grain.ID, self string, candidates []cluster.SiloInfo) cluster.SiloInfo {
	switch p {
	case grain.PlacePreferLocal:
		for _, c := range candidates {
			if c.SiloID == self {
				return c
			}
		}
	case grain.PlaceHash:
		return rendezvous(id, candidates)
	case grain.PlaceLeastActivations:
		return leastActivations(candidates)
	}
	return candidates[rand.IntN(len(candidates))]
}

// leastActivations returns the candidate that last reported the fewest
// activations; ties are broken at random so that silos reporting the same
// count share new activations.
func leastActivations(candidates []cluster.SiloInfo) cluster.SiloInfo {
	best, ties := 0, 1
	for i := 1; i < len(candidates); i++ {
		switch a, b := candidates[i].Activations, candidates[best].Activations; {
		case a < b:
			best, ties = i, 1
		case a == b:
			ties++
			if rand.IntN(ties) == 0 {
				best = i
			}
		}
	}
	return candidates[best]
}

// rendezvous returns the candidate with the highest hash of (silo, grain):
// every process with the same view picks the same silo, and a silo joining
// or leaving moves only the grains it wins or held.
func rendezvous(id grain.ID, candidates []cluster.SiloInfo) cluster.SiloInfo {
	best, bestScore := 0, uint64(0)
	for i, c := range candidates {
		h := fnv.New64a()
		h.Write([]byte(c.SiloID))
		h.Write([]byte{0})
		h.Write([]byte(id.Type))
		h.Write([]byte{0})
		h.Write([]byte(id.Key))
		if score := mix64(h.Sum64()); i == 0 || score > bestScore {
			best, bestScore = i, score
		}
	}
	return candidates[best]
}

// mix64 is the murmur3 finaliser: FNV alone spreads inputs that differ in a
// few trailing bytes poorly, which rendezvous hashing cannot afford.
func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
