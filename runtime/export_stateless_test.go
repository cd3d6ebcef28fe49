package runtime

import "github.com/granary-rt/granary/grain"

// StatelessPool returns how many worker activations the pool of stateless
// grain id holds on s, and how many calls they hold queued (0, 0 if s has
// no pool for id): a test hook.
func StatelessPool(s *Silo, id grain.ID) (workers, queued int) {
	sh := s.table.shard(id)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	sh.eachWorker(func(a *activation) {
		if a.id != id {
			return
		}
		workers++
		a.mu.Lock()
		queued += a.queue.len()
		a.mu.Unlock()
	})
	return workers, queued
}
