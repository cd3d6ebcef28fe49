package runtime

import (
	"fmt"
	"testing"

	"github.com/granary-rt/granary/grain"
)

func TestRouteCache(t *testing.T) {
	id := func(i int) grain.ID { return grain.ID{Type: "t", Key: fmt.Sprint(i)} }
	host := func(i int) routeHost {
		return routeHost{siloID: fmt.Sprint("silo-", i%3), address: "a", incarnation: int64(i)}
	}

	for _, size := range []int{1, 10, 100, 1000} {
		c := newRouteCache(size)
		for i := range 5 * size {
			c.put(id(i), host(i))
			// One grain is called all the time: CLOCK keeps it (given
			// room for one more).
			if _, ok := c.get(id(0)); !ok && size > 1 {
				t.Fatalf("size %d: the grain called between every put was evicted after %d puts", size, i+1)
			}
		}
		if n := c.len(); n > size {
			t.Fatalf("size %d: %d grains cached", size, n)
		}
		if size >= 10 && c.len() < size*3/4 {
			t.Errorf("size %d: only %d grains cached", size, c.len())
		}
		// The newest grain is in, with its host.
		last := 5*size - 1
		if h, ok := c.get(id(last)); !ok || h != host(last) {
			t.Errorf("size %d: newest grain: %+v, %v", size, h, ok)
		}
		// A changed host replaces the entry; drop forgets it, and its slot
		// is reused.
		c.put(id(last), host(7))
		if h, _ := c.get(id(last)); h != host(7) {
			t.Errorf("size %d: updated host %+v, want %+v", size, h, host(7))
		}
		n := c.len()
		c.drop(id(last))
		c.drop(id(last))
		if _, ok := c.get(id(last)); ok || c.len() != n-1 {
			t.Errorf("size %d: after drop: cached %v, len %d (was %d)", size, ok, c.len(), n)
		}
		c.put(id(last), host(1)) // same shard: the freed slot, no eviction
		if c.len() != n {
			t.Errorf("size %d: len %d after a put into the dropped slot, want %d", size, c.len(), n)
		}
	}

	var off *routeCache = newRouteCache(-1)
	off.put(id(1), host(1))
	if _, ok := off.get(id(1)); ok || off.len() != 0 {
		t.Error("a disabled cache remembered a grain")
	}
	off.drop(id(1))
}

func TestRouteCacheHitDoesNotAllocate(t *testing.T) {
	c := newRouteCache(100)
	g := grain.ID{Type: "t", Key: "k"}
	h := routeHost{siloID: "s", address: "a", incarnation: 1}
	c.put(g, h)
	if n := testing.AllocsPerRun(100, func() {
		c.get(g)
		c.put(g, h)
	}); n != 0 {
		t.Fatalf("a hit and a put of the same host allocate %v times", n)
	}
}
