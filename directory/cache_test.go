package directory

import (
	"fmt"
	"sync"
	"testing"

	"github.com/granary-rt/granary/grain"
)

func cid(i int) grain.ID { return grain.ID{Type: "t", Key: fmt.Sprint(i)} }

func TestCacheShape(t *testing.T) {
	tests := []struct {
		size, shards int
	}{
		{1, 1}, {31, 1}, {32, 2}, {100, 4}, {4096, 256}, {DefaultCacheSize, 256},
	}
	for _, tc := range tests {
		c := newCache(tc.size)
		if len(c.shards) != tc.shards {
			t.Errorf("newCache(%d): %d shards, want %d", tc.size, len(c.shards), tc.shards)
		}
		total := 0
		for i := range c.shards {
			total += c.shards[i].limit
		}
		if total != tc.size {
			t.Errorf("newCache(%d): shard limits add up to %d", tc.size, total)
		}
	}
	if c := newCache(0); c != nil {
		t.Error("newCache(0) != nil")
	}
	var c *cache // a nil cache caches nothing and does not panic
	c.fill(cid(1), Entry{SiloID: "a"}, c.epoch(cid(1)))
	if _, ok := c.get(cid(1)); ok || c.len() != 0 {
		t.Error("nil cache returned an entry")
	}
	c.drop(cid(1))
}

func TestCacheFillGetDrop(t *testing.T) {
	c := newCache(1000)
	e := Entry{SiloID: "a", ActivationID: 1}
	c.fill(cid(1), e, c.epoch(cid(1)))
	if got, ok := c.get(cid(1)); !ok || got != e {
		t.Fatalf("get = %+v, %v", got, ok)
	}
	e2 := Entry{SiloID: "b"}
	c.fill(cid(1), e2, c.epoch(cid(1)))
	if got, _ := c.get(cid(1)); got != e2 || c.len() != 1 {
		t.Fatalf("after overwrite: get = %+v, len %d", got, c.len())
	}
	c.drop(cid(1))
	if _, ok := c.get(cid(1)); ok || c.len() != 0 {
		t.Fatal("entry survived drop")
	}
	// The freed slot is reused.
	c.fill(cid(2), e, c.epoch(cid(2)))
	s := c.shard(cid(2))
	if c.shard(cid(1)) == s && len(s.ring) != 1 {
		t.Fatalf("slot not reused: %d slots", len(s.ring))
	}
}

// TestCacheStaleFill: a read that started before a removal does not put
// back what it read.
func TestCacheStaleFill(t *testing.T) {
	c := newCache(100)
	id := cid(1)
	old := Entry{SiloID: "a"}
	c.fill(id, old, c.epoch(id))
	epoch := c.epoch(id) // a Lookup misses... (here: reads the epoch)
	c.drop(id)           // ...an Unregister or Invalidate overtakes it...
	c.fill(id, old, epoch)
	if _, ok := c.get(id); ok {
		t.Fatal("a fill older than a drop was cached")
	}
	c.fill(id, old, c.epoch(id))
	if _, ok := c.get(id); !ok {
		t.Fatal("a current fill was not cached")
	}
}

// TestCacheClock: entries read since the clock hand last passed survive
// eviction; unread ones go first.
func TestCacheClock(t *testing.T) {
	const size = 8
	c := newCache(size) // one shard
	for i := range size {
		c.fill(cid(i), Entry{SiloID: "a"}, c.epoch(cid(i)))
	}
	for i := range size / 2 { // read the first half
		c.get(cid(i))
	}
	for i := size; i < size+size/2; i++ { // insert as many new ones
		c.fill(cid(i), Entry{SiloID: "a"}, c.epoch(cid(i)))
	}
	if c.len() != size {
		t.Fatalf("len = %d, want %d", c.len(), size)
	}
	for i := range size + size/2 {
		_, ok := c.get(cid(i))
		wantOK := i < size/2 || i >= size
		if ok != wantOK {
			t.Errorf("entry %d cached = %v, want %v", i, ok, wantOK)
		}
	}
}

func TestCacheGetDoesNotAllocate(t *testing.T) {
	c := newCache(DefaultCacheSize)
	id := grain.ID{Type: "bank.Account", Key: "alice"}
	c.fill(id, Entry{SiloID: "a", Address: "x"}, c.epoch(id))
	if n := testing.AllocsPerRun(1000, func() { c.get(id) }); n != 0 {
		t.Fatalf("cache hit: %v allocs, want 0", n)
	}
}

// TestCacheConcurrent hammers a small cache from many goroutines (run it
// with -race) and checks its bookkeeping afterwards.
func TestCacheConcurrent(t *testing.T) {
	c := newCache(64)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 5000 {
				id := cid((g*7919 + i) % 300)
				switch i % 4 {
				case 0, 1:
					c.fill(id, Entry{SiloID: "s", ActivationID: uint64(i)}, c.epoch(id))
				case 2:
					c.get(id)
				case 3:
					c.drop(id)
				}
			}
		})
	}
	wg.Wait()
	if n := c.len(); n > 64 {
		t.Fatalf("len %d > 64", n)
	}
	mapped, ringed := 0, 0
	for i := range c.shards {
		s := &c.shards[i]
		for id, n := range s.m {
			mapped++
			if c.shard(id) != s {
				t.Errorf("%v: in the wrong shard", id)
			}
			if rs := s.ring[n.slot]; rs.n != n || rs.id != id {
				t.Errorf("%v: ring slot %d holds %v", id, n.slot, rs.id)
			}
		}
		ringed += len(s.ring) - len(s.free)
	}
	if mapped != ringed {
		t.Errorf("maps hold %d entries, rings %d", mapped, ringed)
	}
}

func TestCacheFillIfAbsentKeepsAnEntry(t *testing.T) {
	c := newCache(100)
	id := grain.ID{Type: "t", Key: "k"}
	real := Entry{SiloID: "a", Address: "a:1", Incarnation: 1, ActivationID: 7}
	c.fill(id, real, c.epoch(id))
	c.fillIfAbsent(id, Entry{SiloID: "b", Address: "b:1", Incarnation: 1})
	if got, _ := c.get(id); got != real {
		t.Fatalf("a hint replaced the cached entry: %+v", got)
	}
	c.drop(id)
	hint := Entry{SiloID: "b", Address: "b:1", Incarnation: 1}
	c.fillIfAbsent(id, hint)
	if got, ok := c.get(id); !ok || got != hint {
		t.Fatalf("hint for a missing entry not cached: %+v, %v", got, ok)
	}
}

// The exported Cache, as a client's hints use it.
func TestCacheForHints(t *testing.T) {
	id := func(i int) grain.ID { return grain.ID{Type: "t", Key: fmt.Sprint(i)} }
	host := func(i int) Entry {
		return Entry{SiloID: fmt.Sprint("silo-", i%3), Address: "a", Incarnation: int64(i)}
	}

	for _, size := range []int{1, 10, 100, 1000} {
		c := NewCache(size)
		for i := range 5 * size {
			c.Put(id(i), host(i))
			// One grain is called all the time: CLOCK keeps it (given
			// room for one more).
			if _, ok := c.Get(id(0)); !ok && size > 1 {
				t.Fatalf("size %d: the grain called between every put was evicted after %d puts", size, i+1)
			}
		}
		if n := c.Len(); n > size {
			t.Fatalf("size %d: %d grains cached", size, n)
		}
		if size >= 10 && c.Len() < size*3/4 {
			t.Errorf("size %d: only %d grains cached", size, c.Len())
		}
		// The newest grain is in, with its host.
		last := 5*size - 1
		if h, ok := c.Get(id(last)); !ok || h != host(last) {
			t.Errorf("size %d: newest grain: %+v, %v", size, h, ok)
		}
		// A changed host replaces the entry; drop forgets it, and its slot
		// is reused.
		c.Put(id(last), host(7))
		if h, _ := c.Get(id(last)); h != host(7) {
			t.Errorf("size %d: updated host %+v, want %+v", size, h, host(7))
		}
		n := c.Len()
		c.Drop(id(last))
		c.Drop(id(last))
		if _, ok := c.Get(id(last)); ok || c.Len() != n-1 {
			t.Errorf("size %d: after drop: cached %v, len %d (was %d)", size, ok, c.Len(), n)
		}
		c.Put(id(last), host(1)) // same shard: the freed slot, no eviction
		if c.Len() != n {
			t.Errorf("size %d: len %d after a put into the dropped slot, want %d", size, c.Len(), n)
		}
	}

	off := NewCache(-1)
	off.Put(id(1), host(1))
	if _, ok := off.Get(id(1)); ok || off.Len() != 0 {
		t.Error("a disabled cache remembered a grain")
	}
	off.Drop(id(1))
}

func TestCachePutOfTheSameEntryDoesNotAllocate(t *testing.T) {
	c := NewCache(100)
	g := grain.ID{Type: "t", Key: "k"}
	h := Entry{SiloID: "s", Address: "a", Incarnation: 1}
	c.Put(g, h)
	if n := testing.AllocsPerRun(100, func() {
		c.Get(g)
		c.Put(g, h)
	}); n != 0 {
		t.Fatalf("a hit and a put of the same host allocate %v times", n)
	}
}
