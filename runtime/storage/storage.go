package storage

import (
	"context"

	"github.com/granary-rt/granary/grain"
)

// Errors returned by providers; errors.Is-checkable.
var (
	// ErrConflict: the etag given to Write or Clear is not the record's
	// current etag: someone else wrote since it was read. The record is
	// unchanged.
	ErrConflict = grain.ErrConflict
	// ErrTooLarge: the value exceeds what the backend can store. Providers
	// wrap it with the size and the limit.
	ErrTooLarge = grain.ErrTooLarge
)

// Key names one stored record: one named state of one grain.
type Key struct {
	GrainType string
	GrainKey  string
	State     string
}

func (k Key) String() string { return k.GrainType + "/" + k.GrainKey + "#" + k.State }

// Provider stores grain state with optimistic concurrency. An etag is an
// opaque string that changes on every write; "" means "no record".
//
// Implementations must be safe for concurrent use and must pass the
// conformance suite in package storagetest.
type Provider interface {
	// Read returns the record's data and etag, or (nil, "", nil) if there is
	// no record.
	Read(ctx context.Context, k Key) (data []byte, etag string, err error)
	// Write stores data if etag is the record's current etag ("" when the
	// record must not exist yet) and returns the new etag. Otherwise it
	// fails with ErrConflict and changes nothing.
	Write(ctx context.Context, k Key, data []byte, etag string) (newEtag string, err error)
	// Clear deletes the record if etag is its current etag; clearing a
	// missing record with etag "" succeeds. Otherwise ErrConflict.
	Clear(ctx context.Context, k Key, etag string) error
}
