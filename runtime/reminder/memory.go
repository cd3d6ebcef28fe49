package reminder

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/granary-rt/granary/grain"
)

// Memory is a Table that keeps reminders in this process. It is meant for
// tests (of the scheduler, of grains that set reminders) and single-process
// development: nothing survives the process.
//
// Memory is safe for concurrent use. Etags come from one counter per Memory
// that only grows, so an etag is never issued twice. Times are returned in
// UTC without a monotonic clock reading.
//
// The zero value is an empty table, like NewMemory().
type Memory struct {
	mu       sync.Mutex
	seq      uint64                    // last etag issued
	buckets  [Buckets]map[memKey]Entry // by BucketOf(Hash(grain))
	progress [Buckets]time.Time        // zero: never saved
}

type memKey struct {
	id   grain.ID
	name string
}

var _ Table = (*Memory)(nil)

// NewMemory returns an empty in-memory table.
func NewMemory() *Memory { return &Memory{} }

// Upsert stores a copy of e, if e.Etag is "" or the current etag.
func (m *Memory) Upsert(ctx context.Context, e Entry) (string, error) {
	if err := e.Validate(); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("reminder: upsert %s: %w", describe(e.Grain, e.Name), err)
	}
	b := BucketOf(Hash(e.Grain))
	k := memKey{e.Grain, e.Name}
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.buckets[b][k]
	if e.Etag != "" && (!ok || cur.Etag != e.Etag) {
		return "", conflict("upsert", e.Grain, e.Name, e.Etag, cur.Etag)
	}
	if m.buckets[b] == nil {
		m.buckets[b] = make(map[memKey]Entry)
	}
	m.seq++
	e.Etag = strconv.FormatUint(m.seq, 10)
	e.Start = e.Start.UTC()
	m.buckets[b][k] = e
	return e.Etag, nil
}

// Remove deletes the reminder if etag is "" or its current etag.
func (m *Memory) Remove(ctx context.Context, id grain.ID, name, etag string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("reminder: remove %s: %w", describe(id, name), err)
	}
	b := BucketOf(Hash(id))
	k := memKey{id, name}
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.buckets[b][k]
	if etag != "" && (!ok || cur.Etag != etag) {
		return false, conflict("remove", id, name, etag, cur.Etag)
	}
	delete(m.buckets[b], k)
	return ok, nil
}

// Get returns the reminder (id, name).
func (m *Memory) Get(ctx context.Context, id grain.ID, name string) (Entry, bool, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, false, fmt.Errorf("reminder: get %s: %w", describe(id, name), err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.buckets[BucketOf(Hash(id))][memKey{id, name}]
	return e, ok, nil
}

// ListGrain returns id's reminders sorted by name.
func (m *Memory) ListGrain(ctx context.Context, id grain.ID) ([]Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("reminder: list %s: %w", id, err)
	}
	var out []Entry
	m.mu.Lock()
	for k, e := range m.buckets[BucketOf(Hash(id))] {
		if k.id == id {
			out = append(out, e)
		}
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Entry) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

// ListBucket returns the reminders of bucket b.
func (m *Memory) ListBucket(ctx context.Context, b int) ([]Entry, error) {
	if err := CheckBucket(b); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("reminder: list bucket %d: %w", b, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Entry, 0, len(m.buckets[b]))
	for _, e := range m.buckets[b] {
		out = append(out, e)
	}
	return out, nil
}

// SaveProgress raises the progress of each bucket to through, atomically.
func (m *Memory) SaveProgress(ctx context.Context, buckets []int, through time.Time) error {
	for _, b := range buckets {
		if err := CheckBucket(b); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("reminder: save progress: %w", err)
	}
	through = through.UTC()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, b := range buckets {
		if through.After(m.progress[b]) {
			m.progress[b] = through
		}
	}
	return nil
}

// LoadProgress returns bucket b's progress.
func (m *Memory) LoadProgress(ctx context.Context, b int) (time.Time, error) {
	if err := CheckBucket(b); err != nil {
		return time.Time{}, err
	}
	if err := ctx.Err(); err != nil {
		return time.Time{}, fmt.Errorf("reminder: load progress of bucket %d: %w", b, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.progress[b], nil
}

// describe names a reminder in errors: "type/key#name".
func describe(id grain.ID, name string) string { return id.String() + "#" + name }

// conflict is the ErrConflict of a compare-and-set on a reminder; current
// is its etag, "" if it does not exist.
func conflict(op string, id grain.ID, name, etag, current string) error {
	if current == "" {
		return fmt.Errorf("reminder: %s %s: etag %q given but there is no reminder: %w",
			op, describe(id, name), etag, ErrConflict)
	}
	return fmt.Errorf("reminder: %s %s: etag %q given but the current etag is %q: %w",
		op, describe(id, name), etag, current, ErrConflict)
}
