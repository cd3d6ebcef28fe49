package directory

import (
	"context"
	"fmt"
	"sync"

	"github.com/granary-rt/granary/grain"
)

// Memory is an in-process Directory with the same contract as Etcd, for
// tests and single-process setups. It is authoritative, so it has no cache
// and Invalidate does nothing. The zero value is ready to use; Memory is
// safe for concurrent use, and Lookup takes no lock.
type Memory struct {
	m sync.Map // grain.ID -> Entry
}

var _ Directory = (*Memory)(nil)

// NewMemory returns an empty in-process directory.
func NewMemory() *Memory { return &Memory{} }

// Register records e for id unless an entry exists and returns the
// registered entry.
func (m *Memory) Register(ctx context.Context, id grain.ID, e Entry) (Entry, error) {
	if err := checkRegister(id, e); err != nil {
		return Entry{}, err
	}
	if err := ctx.Err(); err != nil {
		return Entry{}, fmt.Errorf("directory: register %s: %w", id, err)
	}
	v, _ := m.m.LoadOrStore(id, e)
	return v.(Entry), nil
}

// Lookup returns id's entry.
func (m *Memory) Lookup(ctx context.Context, id grain.ID) (Entry, bool, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, false, fmt.Errorf("directory: lookup %s: %w", id, err)
	}
	v, ok := m.m.Load(id)
	if !ok {
		return Entry{}, false, nil
	}
	return v.(Entry), true, nil
}

// Unregister removes id's entry if it is still e.
func (m *Memory) Unregister(ctx context.Context, id grain.ID, e Entry) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("directory: unregister %s: %w", id, err)
	}
	m.m.CompareAndDelete(id, e)
	return nil
}

// Cached implements Cacher; every entry of a Memory is local.
func (m *Memory) Cached(id grain.ID) (Entry, bool) {
	v, ok := m.m.Load(id)
	if !ok {
		return Entry{}, false
	}
	return v.(Entry), true
}

// Invalidate does nothing: Memory has no cache.
func (m *Memory) Invalidate(grain.ID) {}

// ForgetSilo removes every entry registered by siloID, as the expiry of
// that silo's lease does in etcd, and returns how many it removed.
func (m *Memory) ForgetSilo(siloID string) int {
	n := 0
	m.m.Range(func(k, v any) bool {
		if v.(Entry).SiloID == siloID && m.m.CompareAndDelete(k, v) {
			n++
		}
		return true
	})
	return n
}

// Len returns the number of registered entries.
func (m *Memory) Len() int {
	n := 0
	m.m.Range(func(any, any) bool { n++; return true })
	return n
}
