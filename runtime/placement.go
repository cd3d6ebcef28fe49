package runtime

import (
	"context"
	"hash/fnv"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/cluster"
)

// Where a new activation is placed, and by whom.
//
// Only a silo that hosts a grain type places its grains: it alone knows
// the type's placement (grain.WithPlacement is a registration option). It
// does so when a call for a grain the directory does not know reaches it
// from its own process (Silo.Invoke: silo.Client(), the silo's grains,
// reminders) or from a client through its gateway, and it is the silo
// "local" to the call for grain.PlacePreferLocal. The silo it chooses
// receives the call with hops 1 and hosts the grain without placing it
// again (serveRequest): the placing silo's view is as good as the
// receiver's, and a receiver that placed again could bounce a call
// between two silos whose views differ.
//
// A silo that does not host the type (in-process, its grains, or its
// gateway) places nothing: resolveUnhosted sends the call, with hops 0, to
// a hosting silo chosen at random, which places the grain as its type
// says: it serves the call, or answers "not here, try X" and the caller
// sends it to X with hops 1 (a gateway redirects its client to X's
// gateway instead, or, under Config.GatewayForward, forwards it there
// itself). A client never places: its calls go to gateways.

// resolveUnhosted is resolve for a grain whose type this silo does not
// host, so does not know the placement of: a grain active somewhere goes
// to its host, a new one to a random silo hosting the type, with hops 0,
// to be placed there.
func (r *router) resolveUnhosted(ctx context.Context, id grain.ID) (route, error) {
	rt, err := r.resolve(ctx, id, grain.PlaceRandom, false)
	rt.hops = 0
	return rt, err
}

// place picks the silo for a new activation of id among candidates (the
// active silos hosting its type, sorted by id, from the view) with
// strategy p. candidates must not be empty.
func (r *router) place(p grain.Placement, id grain.ID, candidates []cluster.SiloInfo) cluster.SiloInfo {
	if p != grain.PlaceLeastActivations {
		return place(p, id, r.self, candidates)
	}
	return r.loads.place(r.self, r.localLoad, candidates)
}

// place picks the silo for a new activation of id among candidates with
// strategy p; self is the silo placing it. See grain.Placement for what
// each strategy means.
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

// loadEstimate is what a placing silo reckons the activation counts of
// the others are: the count each last published through membership (at
// most every loadInterval, and only after a change of a tenth), plus the
// activations this silo placed there since, for at most placedWindow.
// Without the second part, every new grain placed between two
// announcements would go to the same silo; the window forgets placements
// a silo that keeps a steady count (as many deactivations as new
// grains) never announces. The zero value is ready to use.
type loadEstimate struct {
	mu sync.Mutex
	m  map[string]*placedSince
	// window overrides placedWindow (tests).
	window time.Duration
}

// placedWindow is how long a placing silo counts what it placed on a
// silo that published no new count meanwhile.
const placedWindow = 2 * loadInterval

// placedSince counts the activations placed on a silo since it published
// count (in its incarnation inc), from first on.
type placedSince struct {
	inc, count, placed int64
	first              time.Time
}

// place returns the candidate with the fewest activations by the
// estimate, and counts one more placed there. self's own count is
// local() when local is set, not its announcement.
func (l *loadEstimate) place(self string, local func() int, candidates []cluster.SiloInfo) cluster.SiloInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil || len(l.m) > 2*len(candidates)+16 {
		// Silos that left are forgotten now and then: the map stays
		// about the size of the membership.
		l.m = make(map[string]*placedSince, len(candidates))
	}
	window := l.window
	if window <= 0 {
		window = placedWindow
	}
	now := time.Now()
	load := make([]int64, len(candidates))
	for i, c := range candidates {
		if c.SiloID == self && local != nil {
			load[i] = int64(local())
			continue
		}
		ps := l.m[c.SiloID]
		if ps == nil || ps.inc != c.Incarnation || ps.count != c.Activations || ps.placed > 0 && now.Sub(ps.first) > window {
			// A new announcement counts what was placed before it.
			ps = &placedSince{inc: c.Incarnation, count: c.Activations}
			l.m[c.SiloID] = ps
		}
		load[i] = c.Activations + ps.placed
	}
	chosen := candidates[leastIndex(load)]
	if ps := l.m[chosen.SiloID]; ps != nil {
		if ps.placed == 0 {
			ps.first = now
		}
		ps.placed++
	}
	return chosen
}

// leastActivations returns the candidate that last reported the fewest
// activations.
func leastActivations(candidates []cluster.SiloInfo) cluster.SiloInfo {
	load := make([]int64, len(candidates))
	for i, c := range candidates {
		load[i] = c.Activations
	}
	return candidates[leastIndex(load)]
}

// leastIndex returns the index of the smallest load; ties are broken at
// random so that silos with the same load share new activations.
func leastIndex(load []int64) int {
	best, ties := 0, 1
	for i := 1; i < len(load); i++ {
		switch a, b := load[i], load[best]; {
		case a < b:
			best, ties = i, 1
		case a == b:
			ties++
			if rand.IntN(ties) == 0 {
				best = i
			}
		}
	}
	return best
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
