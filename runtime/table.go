package runtime

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/granary-rt/granary/grain"
)

const tableShards = 64

// table maps grain ids to this silo's activations. It is sharded so that
// lookups from many callers do not contend on one lock. The pools of
// stateless worker types (stateless.go) live beside the single
// activations: get never returns a worker, but snapshot, each, len and
// remove cover workers too.
type table struct {
	seed    maphash.Seed
	shards  [tableShards]tableShard
	workers atomic.Int64 // workers in all pools
}

type tableShard struct {
	mu    sync.RWMutex
	m     map[grain.ID]*activation
	pools map[grain.ID]*workerPool // nil until a stateless worker is created
	_     [32]byte                 // keep shards on separate cache lines
}

func newTable() *table {
	t := &table{seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].m = make(map[grain.ID]*activation)
	}
	return t
}

func (t *table) shard(id grain.ID) *tableShard {
	return &t.shards[maphash.String(t.seed, id.Key)%tableShards]
}

func (t *table) get(id grain.ID) *activation {
	sh := t.shard(id)
	sh.mu.RLock()
	a := sh.m[id]
	sh.mu.RUnlock()
	return a
}

// getOrCreate returns the activation for id, creating it with newFn if there
// is none; created reports whether it did.
func (t *table) getOrCreate(id grain.ID, newFn func() *activation) (a *activation, created bool) {
	if a := t.get(id); a != nil {
		return a, false
	}
	sh := t.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if a := sh.m[id]; a != nil {
		return a, false
	}
	a = newFn()
	sh.m[id] = a
	return a, true
}

// remove deletes a from the table if it is still the activation for its id.
func (t *table) remove(a *activation) {
	if a.pool != nil {
		t.removeWorker(a)
		return
	}
	sh := t.shard(a.id)
	sh.mu.Lock()
	if sh.m[a.id] == a {
		delete(sh.m, a.id)
	}
	sh.mu.Unlock()
}

// snapshot returns the activations, shard by shard.
func (t *table) snapshot() []*activation {
	var out []*activation
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		for _, a := range sh.m {
			out = append(out, a)
		}
		sh.eachWorker(func(a *activation) { out = append(out, a) })
		sh.mu.RUnlock()
	}
	return out
}

// each calls fn for every activation with its shard read-locked; fn must not
// touch the table.
func (t *table) each(fn func(*activation)) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		for _, a := range sh.m {
			fn(a)
		}
		sh.eachWorker(fn)
		sh.mu.RUnlock()
	}
}

func (t *table) len() int {
	n := int(t.workers.Load())
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}
