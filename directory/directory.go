package directory

import (
	"context"

	"github.com/granary-rt/granary/grain"
)

// Entry says which activation of a grain is the registered one: the silo
// hosting it, that silo's incarnation, and the activation's id on the silo.
type Entry struct {
	SiloID       string `msgpack:"s"`
	Address      string `msgpack:"a"`
	Incarnation  int64  `msgpack:"i"`
	ActivationID uint64 `msgpack:"n"`
}

// IsZero reports whether e is the zero Entry.
func (e Entry) IsZero() bool { return e == Entry{} }

// Directory maps grain ids to their single registered activation.
//
// Contract: at most one entry per grain id exists at any time; Register is
// "create if absent"; Unregister removes an entry only if it is still the
// given one. Implementations are safe for concurrent use.
type Directory interface {
	// Register records e for id unless an entry exists, and returns the
	// registered entry: e if it won, the existing entry otherwise.
	Register(ctx context.Context, id grain.ID, e Entry) (Entry, error)
	// Lookup returns the registered entry for id, from the local cache when
	// it has one. ok is false if none is registered.
	Lookup(ctx context.Context, id grain.ID) (e Entry, ok bool, err error)
	// Unregister removes id's entry if it is still e. Removing an entry
	// that is gone or belongs to another activation is not an error.
	Unregister(ctx context.Context, id grain.ID, e Entry) error
	// Invalidate drops the cached entry for id, if any (for instance after
	// a silo answered "not here").
	Invalidate(id grain.ID)
}

// Rememberer is implemented by directories with a local cache that accepts
// routing hints: an entry learnt from a successful call rather than read
// from the directory (its ActivationID may be 0). A hint is only a hint:
// a silo that no longer hosts the grain answers "not here" and the caller
// invalidates it.
type Rememberer interface {
	Remember(id grain.ID, e Entry)
}

// Cacher is implemented by directories with a local cache. Cached returns the
// cached entry for id without any remote request.
type Cacher interface {
	Cached(id grain.ID) (Entry, bool)
}

var (
	_ Cacher = (*Etcd)(nil)
	_ Cacher = (*Memory)(nil)

	_ Rememberer = (*Etcd)(nil)
)
