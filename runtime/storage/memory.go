package storage

import (
	"context"
	"fmt"
	"strconv"
	"sync"
)

// Memory is a Provider that keeps records in a map in this process. It is
// meant for tests and single-process development: nothing survives the
// process.
//
// Memory is safe for concurrent use. It copies data on the way in and on the
// way out, so neither the caller's slice given to Write nor the one returned
// by Read aliases the stored value. Etags come from one counter per Memory
// that only grows, so an etag is never issued twice, not even for a record
// that was cleared and written again: a holder of an etag from before the
// Clear can never write over the new record (no ABA).
//
// The zero value is an empty provider without a size limit, like
// NewMemory().
type Memory struct {
	maxValueBytes int

	mu   sync.RWMutex
	seq  uint64 // last etag issued
	recs map[Key]memRecord
}

type memRecord struct {
	data []byte // never nil for a stored record
	etag string
}

// MemoryOption configures a Memory provider. Create options with the With
// functions of this package.
type MemoryOption interface {
	applyMemory(*Memory)
}

type memoryOptionFunc func(*Memory)

func (f memoryOptionFunc) applyMemory(m *Memory) { f(m) }

// WithMaxValueBytes makes Memory reject values longer than n bytes with an
// error wrapping ErrTooLarge, as a backend with a size limit would. Zero or
// less means no limit, the default. Tests use it to exercise the runtime's
// handling of oversized states without a real backend.
func WithMaxValueBytes(n int) MemoryOption {
	return memoryOptionFunc(func(m *Memory) { m.maxValueBytes = max(n, 0) })
}

// NewMemory returns an empty in-memory provider.
func NewMemory(opts ...MemoryOption) *Memory {
	m := &Memory{recs: make(map[Key]memRecord)}
	for _, o := range opts {
		o.applyMemory(m)
	}
	return m
}

var (
	_ Provider = (*Memory)(nil)
	_ Limiter  = (*Memory)(nil)
)

// MaxValueBytes returns the limit set with WithMaxValueBytes, 0 if none.
func (m *Memory) MaxValueBytes() int { return m.maxValueBytes }

// Read returns a copy of the record's data and its etag, or (nil, "", nil)
// if there is no record.
func (m *Memory) Read(ctx context.Context, k Key) ([]byte, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", fmt.Errorf("storage: read %s: %w", k, err)
	}
	m.mu.RLock()
	rec, ok := m.recs[k]
	m.mu.RUnlock()
	if !ok {
		return nil, "", nil
	}
	// Stored data is never mutated in place (Write replaces the slice), so
	// copying outside the lock is safe.
	return append([]byte{}, rec.data...), rec.etag, nil
}

// Write stores a copy of data if etag is the record's current etag ("" for
// a record that must not exist yet) and returns the new etag.
func (m *Memory) Write(ctx context.Context, k Key, data []byte, etag string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("storage: write %s: %w", k, err)
	}
	if m.maxValueBytes > 0 && len(data) > m.maxValueBytes {
		return "", fmt.Errorf("storage: write %s: value is %d bytes, limit is %d: %w",
			k, len(data), m.maxValueBytes, ErrTooLarge)
	}
	buf := append([]byte{}, data...) // copy outside the lock; never nil
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, ok := m.recs[k]
	if rec.etag != etag { // rec.etag is "" when !ok
		return "", conflict("write", k, etag, rec.etag, ok)
	}
	if m.recs == nil {
		m.recs = make(map[Key]memRecord)
	}
	m.seq++
	rec = memRecord{data: buf, etag: strconv.FormatUint(m.seq, 10)}
	m.recs[k] = rec
	return rec.etag, nil
}

// Clear deletes the record if etag is its current etag. Clearing a missing
// record with etag "" succeeds.
func (m *Memory) Clear(ctx context.Context, k Key, etag string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: clear %s: %w", k, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, ok := m.recs[k]
	if rec.etag != etag {
		return conflict("clear", k, etag, rec.etag, ok)
	}
	delete(m.recs, k)
	return nil
}

func conflict(op string, k Key, etag, current string, exists bool) error {
	if !exists {
		return fmt.Errorf("storage: %s %s: etag %q given but there is no record: %w", op, k, etag, ErrConflict)
	}
	return fmt.Errorf("storage: %s %s: etag %q given but the current etag is %q: %w", op, k, etag, current, ErrConflict)
}
