package directory

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/granary-rt/granary/grain"
)

// DefaultCacheSize is the number of entries an Etcd directory caches when
// EtcdConfig.CacheSize is 0.
const DefaultCacheSize = 100_000

const (
	maxCacheShards     = 256
	minEntriesPerShard = 16
)

// cache is a bounded map from grain id to Entry with CLOCK (second-chance)
// eviction.
//
// The cache is sharded by id hash; each shard has a map of immutable
// nodes under a read-write mutex and its own clock ring, so readers and
// writers of different ids rarely meet. A hit takes the shard's read lock
// and does not allocate. A node's reference bit is written only when not
// yet set.
//
// Each shard carries an epoch that every removal moves. A caller that reads
// the backend on a miss notes the epoch first and fills only if it has not
// moved since, so an Invalidate or Unregister that overtakes the read is
// not undone by a stale fill.
type cache struct {
	seed   maphash.Seed
	mask   uint64
	shards []cacheShard
}

// cacheNode is immutable but for ref; an update replaces the node.
type cacheNode struct {
	e    Entry
	ref  atomic.Bool // read since the clock hand last passed
	slot int32       // index in the shard's ring; guarded by the shard mutex
}

type cacheShard struct {
	mu    sync.RWMutex
	m     map[grain.ID]*cacheNode
	ring  []ringSlot
	free  []int32 // indexes of emptied ring slots
	limit int
	hand  int
	epoch uint64
	_     [64]byte // keep shards' mutexes on separate cache lines
}

type ringSlot struct {
	id grain.ID
	n  *cacheNode // nil: the slot is free
}

// newCache returns a cache bounded to size entries, or nil when size <= 0
// (a nil *cache is valid and caches nothing).
func newCache(size int) *cache {
	if size <= 0 {
		return nil
	}
	n := 1
	for n < maxCacheShards && size/(n*2) >= minEntriesPerShard {
		n *= 2
	}
	c := &cache{seed: maphash.MakeSeed(), mask: uint64(n - 1), shards: make([]cacheShard, n)}
	for i := range c.shards {
		c.shards[i].m = make(map[grain.ID]*cacheNode)
		c.shards[i].limit = size / n
		if i < size%n {
			c.shards[i].limit++
		}
	}
	return c
}

func (c *cache) shard(id grain.ID) *cacheShard {
	// The key alone spreads ids well enough: a cluster has few types.
	return &c.shards[maphash.String(c.seed, id.Key)&c.mask]
}

// get returns the cached entry for id.
func (c *cache) get(id grain.ID) (Entry, bool) {
	if c == nil {
		return Entry{}, false
	}
	s := c.shard(id)
	s.mu.RLock()
	n := s.m[id]
	s.mu.RUnlock()
	if n == nil {
		return Entry{}, false
	}
	if !n.ref.Load() {
		n.ref.Store(true)
	}
	return n.e, true
}

// epoch returns id's shard epoch, to pass to fill.
func (c *cache) epoch(id grain.ID) uint64 {
	if c == nil {
		return 0
	}
	s := c.shard(id)
	s.mu.RLock()
	ep := s.epoch
	s.mu.RUnlock()
	return ep
}

// fill caches e for id unless an entry of id's shard was removed since
// epoch was read.
func (c *cache) fill(id grain.ID, e Entry, epoch uint64) {
	if c == nil {
		return
	}
	s := c.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.epoch == epoch {
		c.putLocked(s, id, e)
	}
}

// fillIfAbsent caches e for id unless an entry for id is cached.
func (c *cache) fillIfAbsent(id grain.ID, e Entry) {
	if c == nil {
		return
	}
	s := c.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[id] == nil {
		c.putLocked(s, id, e)
	}
}

// putLocked caches e for id in s, whose mutex the caller holds.
func (c *cache) putLocked(s *cacheShard, id grain.ID, e Entry) {
	old := s.m[id]
	if old != nil && old.e == e {
		old.ref.Store(true)
		return
	}
	n := &cacheNode{e: e}
	if old != nil {
		n.slot = old.slot
		n.ref.Store(true)
	} else {
		switch {
		case len(s.free) > 0:
			n.slot = s.free[len(s.free)-1]
			s.free = s.free[:len(s.free)-1]
		case len(s.ring) < s.limit:
			s.ring = append(s.ring, ringSlot{})
			n.slot = int32(len(s.ring) - 1)
		default:
			n.slot = c.evict(s)
		}
	}
	s.ring[n.slot] = ringSlot{id: id, n: n}
	s.m[id] = n
}

// evict removes the first entry the clock hand finds without its
// reference bit, clearing the bits it passes, and returns its ring slot.
// The shard is full, so every slot is in use; the loop ends within two
// turns. The caller holds s.mu.
func (c *cache) evict(s *cacheShard) int32 {
	for {
		i := s.hand
		s.hand++
		if s.hand == len(s.ring) {
			s.hand = 0
		}
		rs := &s.ring[i]
		if rs.n.ref.Load() {
			rs.n.ref.Store(false)
			continue
		}
		delete(s.m, rs.id)
		*rs = ringSlot{}
		return int32(i)
	}
}

// drop removes id's entry, if any, and moves the shard's epoch.
func (c *cache) drop(id grain.ID) {
	if c == nil {
		return
	}
	s := c.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epoch++
	n := s.m[id]
	if n == nil {
		return
	}
	delete(s.m, id)
	slot := n.slot
	s.ring[slot] = ringSlot{}
	s.free = append(s.free, slot)
}

// len returns the number of cached entries.
func (c *cache) len() int {
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

// Cache remembers the Entry of at most a fixed number of grains, forgetting
// those not read recently first (CLOCK). It is the Etcd directory's cache,
// for other holders of hints about where grains are: a client remembers
// with it which gateway served a grain. A hit does not allocate. A nil
// *Cache is valid and remembers nothing. It is safe for concurrent use.
type Cache struct{ c *cache }

// NewCache returns a cache of at most size entries; nil (remembering
// nothing) if size <= 0.
func NewCache(size int) *Cache {
	if size <= 0 {
		return nil
	}
	return &Cache{c: newCache(size)}
}

// Get returns the entry remembered for id.
func (c *Cache) Get(id grain.ID) (Entry, bool) {
	if c == nil {
		return Entry{}, false
	}
	return c.c.get(id)
}

// Put remembers e for id, replacing what was remembered, evicting another
// grain if the cache is full.
func (c *Cache) Put(id grain.ID, e Entry) {
	if c == nil {
		return
	}
	if old, ok := c.c.get(id); ok && old == e {
		return // the common case: nothing changed, no write lock
	}
	s := c.c.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	c.c.putLocked(s, id, e)
}

// Drop forgets id, if remembered.
func (c *Cache) Drop(id grain.ID) {
	if c != nil {
		c.c.drop(id)
	}
}

// Len returns how many grains are remembered.
func (c *Cache) Len() int {
	if c == nil {
		return 0
	}
	return c.c.len()
}
