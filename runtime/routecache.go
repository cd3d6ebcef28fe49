package runtime

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/granary-rt/granary/grain"
)

// DefaultRouteCacheSize is how many grains a client remembers the silo of
// when ClientConfig.RouteCacheSize is 0.
const DefaultRouteCacheSize = 100_000

const (
	maxRouteShards     = 64
	minRoutesPerShard  = 16
	routeCacheLineSize = 64
)

// routeHost is where a client's call to a grain was last served: the silo
// (its id and incarnation, when known) and the address it was reached at.
type routeHost struct {
	siloID      string
	address     string
	incarnation int64 // 0: not known (a static gateway, a redirect to a silo not in the view yet)
}

// routeCache maps grain ids to the silo that last served a call to them,
// for at most a fixed number of grains, with CLOCK (second-chance)
// eviction. It is a client's substitute for reading the grain directory:
// a hint, dropped when the silo answers "not here" or cannot be dialed.
//
// It is sharded by the grain key's hash; a hit takes its shard's read lock
// and does not allocate. A nil *routeCache is valid and caches nothing.
type routeCache struct {
	seed   maphash.Seed
	mask   uint64
	shards []routeShard
}

type routeShard struct {
	mu    sync.RWMutex
	m     map[grain.ID]int32 // id -> index in ring
	ring  []routeSlot
	free  []int32 // emptied ring slots
	limit int
	hand  int
	_     [routeCacheLineSize]byte // keep shards' mutexes on separate cache lines
}

type routeSlot struct {
	id   grain.ID
	host routeHost
	ref  atomic.Bool // read since the clock hand last passed
}

// newRouteCache returns a cache of at most size grains, or nil (caching
// nothing) if size <= 0.
func newRouteCache(size int) *routeCache {
	if size <= 0 {
		return nil
	}
	n := 1
	for n < maxRouteShards && size/(n*2) >= minRoutesPerShard {
		n *= 2
	}
	c := &routeCache{seed: maphash.MakeSeed(), mask: uint64(n - 1), shards: make([]routeShard, n)}
	for i := range c.shards {
		s := &c.shards[i]
		s.m = make(map[grain.ID]int32)
		s.limit = size / n
		if i < size%n {
			s.limit++
		}
	}
	return c
}

func (c *routeCache) shard(id grain.ID) *routeShard {
	return &c.shards[maphash.String(c.seed, id.Key)&c.mask]
}

// get returns where id was last served.
func (c *routeCache) get(id grain.ID) (routeHost, bool) {
	if c == nil {
		return routeHost{}, false
	}
	s := c.shard(id)
	s.mu.RLock()
	defer s.mu.RUnlock()
	i, ok := s.m[id]
	if !ok {
		return routeHost{}, false
	}
	slot := &s.ring[i]
	if !slot.ref.Load() {
		slot.ref.Store(true)
	}
	return slot.host, true
}

// put records that id was served by h, evicting another grain if the
// shard is full.
func (c *routeCache) put(id grain.ID, h routeHost) {
	if c == nil {
		return
	}
	if old, ok := c.get(id); ok && old == h {
		return // the common case: a call that went where the cache said
	}
	s := c.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.m[id]; ok {
		s.ring[i].host = h
		s.ring[i].ref.Store(true)
		return
	}
	var i int32
	switch {
	case len(s.free) > 0:
		i = s.free[len(s.free)-1]
		s.free = s.free[:len(s.free)-1]
	case len(s.ring) < s.limit:
		s.ring = append(s.ring, routeSlot{})
		i = int32(len(s.ring) - 1)
	default:
		i = s.evict()
	}
	slot := &s.ring[i]
	slot.id, slot.host = id, h
	slot.ref.Store(false)
	s.m[id] = i
}

// evict empties the first slot the clock hand finds not read since it
// last passed, clearing the bits it passes, and returns its index. The
// shard is full and has no free slot, so every slot is in use; the loop ends within two turns.
// The caller holds s.mu.
func (s *routeShard) evict() int32 {
	for {
		i := s.hand
		s.hand = (s.hand + 1) % len(s.ring)
		slot := &s.ring[i]
		if slot.ref.Load() {
			slot.ref.Store(false)
			continue
		}
		delete(s.m, slot.id)
		slot.id, slot.host = grain.ID{}, routeHost{}
		return int32(i)
	}
}

// drop forgets id, if cached.
func (c *routeCache) drop(id grain.ID) {
	if c == nil {
		return
	}
	s := c.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.m[id]
	if !ok {
		return
	}
	delete(s.m, id)
	slot := &s.ring[i]
	slot.id, slot.host = grain.ID{}, routeHost{}
	slot.ref.Store(false)
	s.free = append(s.free, i)
}

// len returns how many grains are cached.
func (c *routeCache) len() int {
	if c == nil {
		return 0
	}
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
