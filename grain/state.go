package grain

import (
	"bytes"
	"context"
	"fmt"
	"hash/maphash"
	"reflect"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// StateStore is the storage behind one persistent state of one grain, as the
// runtime provides it. Etags implement optimistic concurrency: a write or
// clear with a stale etag fails with ErrConflict. An empty etag means "no
// record exists".
type StateStore interface {
	Read(ctx context.Context) (data []byte, etag string, err error)
	Write(ctx context.Context, data []byte, etag string) (newEtag string, err error)
	Clear(ctx context.Context, etag string) error
}

// Persistent is the runtime's view of a declared state: it loads every
// state before the first call and writes the changed ones on deactivation.
// State implements it.
type Persistent interface {
	// Reload reads the state from storage, replacing the in-memory value.
	Reload(ctx context.Context) error
	// WriteIfChanged writes the state if it changed since it was last
	// loaded or written, and reports whether it wrote.
	WriteIfChanged(ctx context.Context) (bool, error)
}

// State is a typed persistent state of a grain. Declare it in the factory
// with NewState; the runtime loads it before the first call. Mutate Value
// freely: changes are written when the activation is deactivated (or when
// the grain calls Write).
//
// Values are encoded with msgpack, struct fields by name (the msgpack tag,
// else the Go field name), so a new version of a grain reads the records of
// an older one: fields may be added (they read as zero), removed (stored
// entries without a field are skipped), reordered, and renamed in Go if a
// tag keeps the stored name. A stored value that does not fit its field's
// new type fails the load with an error naming the field. Two exceptions:
// msgpack truncates a stored integer into a narrower or unsigned integer
// field without an error, so only widen integer fields; and a record that a
// newer version loads and writes back loses the entries that version has no
// field for, which an older version rolled back to then reads as zero.
//
// A State belongs to its activation and is used only from its turns; it is
// not safe for use from other goroutines.
type State[T any] struct {
	// Value is the current in-memory value. After a load of a missing
	// record it is T's zero value.
	Value T

	name   string
	store  StateStore
	etag   string
	exists bool
	sum    uint64 // hash of the encoding last loaded or written
	// ordered: T's msgpack encoding is a function of its value (no Go map
	// can occur in it), so raw encodings compare without canonicalising.
	ordered bool
	// stale: the stored record differs from the encoding of the value it
	// loaded as (an older version's record): a write is due even if Value
	// does not change.
	stale bool
}

// NewState declares a persistent state named name for the grain of c. Call it
// from the grain's factory, once per name.
func NewState[T any](c Context, name string, opts ...StateOption) *State[T] {
	var cfg StateConfig
	for _, o := range opts {
		o.applyState(&cfg)
	}
	s := &State[T]{name: name, ordered: encodesInOrder(reflect.TypeFor[T]())}
	s.store = c.AttachState(name, cfg, s)
	return s
}

// Name returns the state's name.
func (s *State[T]) Name() string { return s.name }

// Exists reports whether a record existed at the last load or was written
// since.
func (s *State[T]) Exists() bool { return s.exists }

// Etag returns the storage etag of the last load or write ("" if none).
func (s *State[T]) Etag() string { return s.etag }

// Reload reads the state from storage, replacing Value. A missing record
// yields T's zero value.
func (s *State[T]) Reload(ctx context.Context) error {
	data, etag, err := s.store.Read(ctx)
	if err != nil {
		return fmt.Errorf("grain: read state %q: %w", s.name, err)
	}
	var v T
	if len(data) > 0 {
		if err := decodeState(data, &v); err != nil {
			return fmt.Errorf("grain: decode state %q: %w", s.name, err)
		}
	}
	if len(data) == 0 {
		// A missing record counts as its zero value: writing it back
		// unchanged would only create an empty record.
		if data, err = encodeState(&v); err != nil {
			return fmt.Errorf("grain: encode state %q: %w", s.name, err)
		}
	}
	s.Value, s.etag, s.exists = v, etag, etag != ""
	s.sum, s.stale = hashOf(data), false
	if s.ordered {
		// Hash this version's encoding of the loaded value, so that later
		// checks hash raw bytes; the stored record is stale if it is not
		// that encoding up to map order.
		enc, err := encodeState(&v)
		if err != nil {
			return fmt.Errorf("grain: encode state %q: %w", s.name, err)
		}
		s.stale = !bytes.Equal(enc, data) && hashOf(enc) != s.sum
		s.sum = s.hash(enc)
	}
	return nil
}

// Write writes Value to storage now. When it returns nil the value is
// durable. It fails with ErrConflict if another activation wrote since this
// one read, and with an error wrapping ErrTooLarge if the provider can never
// store the value.
//
// When Write fails, the runtime tears the activation down once the current
// turn ends, without writing any state, and the next call activates the
// grain again from storage: no later call sees a value whose write failed.
// The error may not say whether the write landed (a lost connection, a
// timeout): only the reload does. So there is no need to restore the old
// Value on an error, and doing so is wrong when the write landed; the
// failing turn should return an error rather than report success.
func (s *State[T]) Write(ctx context.Context) error {
	data, err := encodeState(&s.Value)
	if err != nil {
		return fmt.Errorf("grain: encode state %q: %w", s.name, err)
	}
	return s.write(ctx, data, s.hash(data))
}

func (s *State[T]) write(ctx context.Context, data []byte, sum uint64) error {
	etag, err := s.store.Write(ctx, data, s.etag)
	if err != nil {
		return fmt.Errorf("grain: write state %q: %w", s.name, err)
	}
	s.etag, s.exists, s.sum, s.stale = etag, true, sum, false
	return nil
}

// WriteIfChanged writes Value if its encoding differs from what was last
// loaded or written.
func (s *State[T]) WriteIfChanged(ctx context.Context) (bool, error) {
	data, err := encodeState(&s.Value)
	if err != nil {
		return false, fmt.Errorf("grain: encode state %q: %w", s.name, err)
	}
	sum := s.hash(data)
	if sum == s.sum && !s.stale {
		return false, nil
	}
	return true, s.write(ctx, data, sum)
}

// Clear deletes the stored record and resets Value to T's zero value. When
// it fails, Value is left as it was and, as after a failed Write, the
// runtime tears the activation down at the end of the turn.
func (s *State[T]) Clear(ctx context.Context) error {
	if err := s.store.Clear(ctx, s.etag); err != nil {
		return fmt.Errorf("grain: clear state %q: %w", s.name, err)
	}
	var zero T
	data, err := encodeState(&zero)
	if err != nil {
		return fmt.Errorf("grain: encode state %q: %w", s.name, err)
	}
	s.Value, s.etag, s.exists = zero, "", false
	s.sum, s.stale = s.hash(data), false
	return nil
}

// hash hashes an encoding of Value: the raw bytes when T encodes in a fixed
// order, else the canonical form.
func (s *State[T]) hash(data []byte) uint64 {
	if s.ordered {
		return maphash.Bytes(seed, data)
	}
	return hashOf(data)
}

var seed = maphash.MakeSeed()

// hashOf hashes the canonical form of an encoded state, so that an unchanged
// value hashes the same even though Go randomises map iteration order.
func hashOf(data []byte) uint64 {
	if c, err := canonical(data); err == nil {
		data = c
	}
	return maphash.Bytes(seed, data)
}

var encPool = sync.Pool{New: func() any {
	var buf bytes.Buffer
	return &stateEncoder{buf: &buf, enc: msgpack.NewEncoder(&buf)}
}}

type stateEncoder struct {
	buf *bytes.Buffer
	enc *msgpack.Encoder
}

// encodeState encodes v with msgpack.
func encodeState(v any) ([]byte, error) {
	e := encPool.Get().(*stateEncoder)
	defer encPool.Put(e)
	e.buf.Reset()
	if err := e.enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.Clone(e.buf.Bytes()), nil
}
