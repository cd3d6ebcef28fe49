package runtime

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"

	"github.com/granary-rt/granary/directory"
	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/cluster"
)

// Stateless workers (grain.StatelessWorker).
//
// A stateless worker type has, on each silo that hosts it, a pool per grain
// id: up to grainType.workers ordinary activations of that id, each with
// its own mailbox and turn loop, none registered in the directory. The
// table holds the pools beside its single activations (table.pool); its
// snapshot, each, len and remove cover the pools' workers too, so idle
// collection, Stop, fencing and ActivationCount treat a worker like any
// activation.
//
// A call for a stateless type that this silo hosts is dispatched here
// (dispatchWorker), never routed; a silo that does not host the type
// routes it as any call (a directory read that finds nothing, then
// placement among the silos that host the type). Routing a stateless type
// from a silo that hosts it (while it stops) goes by placeWorker, which
// reads no directory.

// placeWorker is the placement of stateless worker types: the calling silo
// if it hosts the type, else a random silo that does, with no directory
// read (router.resolve).
const placeWorker grain.Placement = 255

// workerPool holds the worker activations of one grain id of a stateless
// worker type on this silo.
type workerPool struct {
	id  grain.ID
	typ *grainType
	t   *table // counts the workers of all pools

	mu sync.Mutex
	// workers in creation order: a call goes to the first idle one, so
	// under light load the later ones fall idle and are collected.
	workers []*activation
	// dead: the pool left the table (its last worker went); a dispatcher
	// that meets it looks the pool up again.
	dead bool
}

// configureStateless checks and records the stateless-worker option of a
// type being registered.
func configureStateless(gt *grainType, tc grain.TypeConfig) error {
	switch n := tc.StatelessWorkers; {
	case n == 0:
		return nil
	case n < 0 || n > grain.MaxStatelessWorkers:
		return fmt.Errorf("grain type %q: grain.StatelessWorker(%d): want 1 to %d activations per grain id (or <= 0 for GOMAXPROCS)",
			gt.desc.Name, n, grain.MaxStatelessWorkers)
	default:
		gt.workers, gt.placement = n, placeWorker
		return nil
	}
}

// dispatchWorker queues m on a worker of its grain's pool, adding a worker
// (and the pool) when every worker is busy and the pool is not full. It
// does not wait for the turn; an error means m was not queued.
func (s *Silo) dispatchWorker(m *message) error {
	if m.method.Name == grain.ReminderMethod {
		// A reminder registered before the type became a stateless
		// worker: refused like a tick for a type that is not
		// Remindable (the reminder service backs it off), and without
		// starting a worker.
		return fmt.Errorf("%w: reminder tick for %s: grain type %s is a stateless worker (grain.StatelessWorker), which takes no reminders",
			grain.ErrUnknownMethod, m.target, m.typ.desc.Name)
	}
	for range maxForwards {
		if s.isFenced() {
			return &notHereError{id: m.target, why: "silo " + s.id + " is fenced"}
		}
		p, err := s.table.pool(m.target, m.typ, s.stopping.Load)
		if err != nil {
			return err
		}
		err, stale := s.dispatchToPool(p, m)
		for _, a := range stale {
			// Left over from an incarnation that was fenced (created just
			// as the fence fell): it can never serve.
			s.table.remove(a)
			for _, q := range a.kill() {
				q.complete(nil, &notHereError{id: q.target, why: "activation of a fenced incarnation"})
			}
		}
		if err != errRetry {
			return err
		}
	}
	return fmt.Errorf("%w: call to %s re-queued %d times without reaching an activation",
		grain.ErrSiloUnavailable, m.target, maxForwards)
}

// dispatchToPool queues m on p's first idle worker; on a new worker when
// none is idle and p is not full; else on the worker with the fewest
// queued calls (whose mailbox limit then applies). A silo that stops
// starts no worker: the call goes to another silo unless a worker is idle
// or p is full. errRetry: p is gone, or it held no worker to take m (the
// workers of a fenced incarnation are returned in stale for the caller to
// remove). The choice and the enqueue happen under p.mu, so two
// callers never both take the same idle worker, nor grow p past its bound.
func (s *Silo) dispatchToPool(p *workerPool, m *message) (err error, stale []*activation) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dead {
		return errRetry, nil
	}
	inc := s.inc.Load()
	for {
		var least, draining, onChain *activation
		leastLen := 0
		for _, a := range p.workers {
			switch idle, queued, st, waitsForIt := a.workerLoad(m.chain); {
			case waitsForIt:
				// A worker that waits for this very call: another one
				// can take it without a deadlock.
				onChain = a
			case a.inc != inc:
				if !slices.Contains(stale, a) {
					stale = append(stale, a)
				}
			case st == statusDead:
				// Being removed (table.remove takes p.mu after us).
			case st == statusDeactivating:
				draining = a
			case idle:
				return p.enqueue(a, m), stale
			case least == nil || queued < leastLen:
				least, leastLen = a, queued
			}
		}
		if len(p.workers) < p.typ.workers {
			// (A stale worker holds its place until the caller removed
			// it: a turn it still runs counts against the bound.)
			a, err := s.newWorker(p)
			if err != nil {
				return err, stale
			}
			return p.enqueue(a, m), stale
		}
		if least == nil {
			least = draining // its calls move on when it is gone
		}
		if least == nil {
			least = onChain // ErrDeadlock, unless its type admits the call
		}
		if least == nil {
			return errRetry, stale
		}
		if err := least.enqueue(m); err != errRetry {
			return err, stale
		}
		p.drop(least)
	}
}

// enqueue queues m on a, a worker of p that p.mu found alive; a worker that
// died just since is dropped from p, and the caller looks again.
func (p *workerPool) enqueue(a *activation, m *message) error {
	err := a.enqueue(m)
	if err == errRetry {
		p.drop(a)
	}
	return err
}

// workerLoad reports whether a worker is idle (valid, no turn running or
// waiting on a call it made, nothing queued), how many calls it holds
// queued, its status, and whether one of its turns waits for a call with
// chain.
func (a *activation) workerLoad(chain []link) (idle bool, queued int, st status, onChain bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	queued = a.queue.len() + a.ready.len()
	idle = a.status == statusValid && !a.running && len(a.waiting) == 0 && len(a.resumers) == 0 && queued == 0
	return idle, queued, a.status, len(chain) > 0 && a.onChainLocked(chain)
}

// newWorker adds a worker to p and starts activating it. The caller holds
// p.mu. Like activationFor, it creates nothing once the silo stops.
func (s *Silo) newWorker(p *workerPool) (*activation, error) {
	s.admit.RLock()
	defer s.admit.RUnlock()
	if s.stopping.Load() {
		return nil, &notHereError{id: p.id, why: "silo " + s.id + " is stopping"}
	}
	a := &activation{silo: s, typ: p.typ, id: p.id, seq: s.nextActivation.Add(1), inc: s.inc.Load(), running: true, pool: p}
	p.workers = append(p.workers, a)
	s.table.workers.Add(1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		a.activate()
	}()
	return a, nil
}

// drop removes a from p, if it is there. The caller holds p.mu.
func (p *workerPool) drop(a *activation) {
	if i := slices.Index(p.workers, a); i >= 0 {
		p.workers = slices.Delete(p.workers, i, i+1) // clears the freed slot
		p.t.workers.Add(-1)
	}
}

// pool returns the pool of id, creating it unless stopping says the silo
// stops (then a not-here error: another silo serves the call).
func (t *table) pool(id grain.ID, typ *grainType, stopping func() bool) (*workerPool, error) {
	sh := t.shard(id)
	sh.mu.RLock()
	p := sh.pools[id]
	sh.mu.RUnlock()
	if p != nil {
		return p, nil
	}
	if stopping() {
		return nil, &notHereError{id: id, why: "silo is stopping"}
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if p := sh.pools[id]; p != nil {
		return p, nil
	}
	if sh.pools == nil {
		sh.pools = make(map[grain.ID]*workerPool)
	}
	p = &workerPool{id: id, typ: typ, t: t}
	sh.pools[id] = p
	return p, nil
}

// removeWorker takes worker a out of its pool, and the pool out of the
// table when a was its last worker.
func (t *table) removeWorker(a *activation) {
	p := a.pool
	p.mu.Lock()
	p.drop(a)
	empty := len(p.workers) == 0
	p.mu.Unlock()
	if !empty {
		return
	}
	sh := t.shard(p.id)
	sh.mu.Lock()
	p.mu.Lock()
	if len(p.workers) == 0 && sh.pools[p.id] == p {
		delete(sh.pools, p.id)
		p.dead = true
	}
	p.mu.Unlock()
	sh.mu.Unlock()
}

// eachWorker calls fn for every worker of the pools of sh, whose lock the
// caller holds (read or write); fn must not touch the table.
func (sh *tableShard) eachWorker(fn func(*activation)) {
	for _, p := range sh.pools {
		p.mu.Lock()
		for _, a := range p.workers {
			fn(a)
		}
		p.mu.Unlock()
	}
}

// unlisted is the directory of a stateless worker: it registers nothing,
// so activate and unregister leave etcd alone.
type unlisted struct{}

func (unlisted) Register(_ context.Context, _ grain.ID, e directory.Entry) (directory.Entry, error) {
	return e, nil
}

func (unlisted) Lookup(context.Context, grain.ID) (directory.Entry, bool, error) {
	return directory.Entry{}, false, nil
}

func (unlisted) Unregister(context.Context, grain.ID, directory.Entry) error { return nil }

func (unlisted) Invalidate(grain.ID) {}

// directory returns the directory a's entry goes to: none for a stateless
// worker.
func (a *activation) directory() directory.Directory {
	if a.pool != nil {
		return unlisted{}
	}
	return a.inc.dir
}

// unhostedPlacement is the placement of calls for grain type typ, which
// this silo does not host: placeWorker if the silos that host it say it is
// a stateless worker, so that its calls read no directory; else random
// (the silo that receives the call places the grain as its type says).
// The membership only steers calls this silo does not host: a silo's own
// types go by its own registration.
func (s *Silo) unhostedPlacement(typ string) grain.Placement {
	if s.view != nil && s.view.Current().StatelessWorker(typ) {
		return placeWorker
	}
	return grain.PlaceRandom
}

// workerRoute is where a call to a stateless worker type goes from this
// silo, read from the membership view alone: here if the silo hosts the
// type and is not stopping, else any other active silo that hosts it.
// hops stays 0: a stateless call is never placed (and never remembered
// in the directory cache), the receiver runs it if it hosts the type.
func (r *router) workerRoute(typ string, hosted bool) (route, error) {
	if hosted {
		return route{local: true}, nil
	}
	var others []cluster.SiloInfo
	for _, c := range r.view.Current().Hosting(typ) {
		if c.SiloID != r.self {
			others = append(others, c)
		}
	}
	if len(others) == 0 {
		return route{}, fmt.Errorf("%w: no other active silo hosts stateless worker type %q", grain.ErrUnknownGrainType, typ)
	}
	return route{silo: others[rand.IntN(len(others))]}, nil
}
