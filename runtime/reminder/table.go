package reminder

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/granary-rt/granary/grain"
)

// ErrConflict: the etag given to Remove (or Upsert with a non-empty etag) is
// not the reminder's current etag. Nothing changed.
var ErrConflict = grain.ErrConflict

// Buckets is the number of hash buckets the reminder space is split into.
// A bucket is the unit of ownership: each bucket is served by exactly one
// silo of the current membership view, and progress is checkpointed per
// bucket.
const Buckets = 256

// Entry is one durable reminder of one grain.
type Entry struct {
	Grain grain.ID
	Name  string
	// Start is the first due time; later ticks are due at Start + k*Period.
	Start time.Time
	// Period between ticks, > 0.
	Period time.Duration
	// Etag changes on every Upsert; set by the table, ignored on input
	// except as the expected current etag (see Table.Upsert).
	Etag string
}

// Hash is the reminder-space position of a grain: FNV-1a 32 of its string
// form "type/key". All reminders of one grain share a hash.
func Hash(id grain.ID) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id.Type))
	_, _ = h.Write([]byte{'/'})
	_, _ = h.Write([]byte(id.Key))
	return h.Sum32()
}

// BucketOf is the bucket a hash belongs to: its top 8 bits.
func BucketOf(hash uint32) int { return int(hash >> 24) }

// Table stores reminders durably, scoped to one cluster. Implementations are
// safe for concurrent use and pass remindertest.Run.
//
// A reminder is identified by (Grain, Name); names compare byte by byte.
// Every method fails with an error wrapping ctx.Err() if ctx is done before
// the call completes; a failed call changes nothing (for SaveProgress: no
// bucket's progress moves backwards).
type Table interface {
	// Upsert creates or replaces the reminder (e.Grain, e.Name) and returns
	// its new etag. If e.Etag is non-empty it must be the current etag
	// (compare-and-set) or Upsert fails with ErrConflict; an empty e.Etag
	// writes unconditionally. An entry that fails Validate is refused with
	// an error wrapping ErrInvalid.
	//
	// Etags are opaque, never empty, and never issued twice for the same
	// reminder, not even after Remove: a holder of an etag from before a
	// Remove cannot overwrite or remove the reminder created after it.
	Upsert(ctx context.Context, e Entry) (etag string, err error)
	// Remove deletes the reminder. A non-empty etag must match the current
	// one (else ErrConflict, also when the reminder does not exist); ""
	// removes unconditionally. Removing a missing reminder with etag ""
	// returns (false, nil).
	Remove(ctx context.Context, id grain.ID, name, etag string) (removed bool, err error)
	// Get returns one reminder, with its current etag; ok is false if it
	// does not exist.
	Get(ctx context.Context, id grain.ID, name string) (e Entry, ok bool, err error)
	// ListGrain returns the grain's reminders sorted by name (byte order),
	// and none of any other grain's.
	ListGrain(ctx context.Context, id grain.ID) ([]Entry, error)
	// ListBucket returns every reminder whose BucketOf(Hash(Grain)) is b,
	// each once, in no particular order, however many there are. A b
	// outside [0, Buckets) fails with ErrInvalid.
	ListBucket(ctx context.Context, b int) ([]Entry, error)
	// SaveProgress records, for each given bucket, that every tick due at or
	// before through was delivered. It never moves a bucket's progress
	// backwards: a bucket whose progress is already later keeps it.
	// buckets may repeat and may be empty; a bucket outside [0, Buckets)
	// fails the call with ErrInvalid before anything is saved.
	SaveProgress(ctx context.Context, buckets []int, through time.Time) error
	// LoadProgress returns the bucket's recorded progress, or the zero time
	// if none was ever saved. A b outside [0, Buckets) fails with
	// ErrInvalid.
	LoadProgress(ctx context.Context, b int) (time.Time, error)
}

// ErrInvalid is wrapped by Validate's errors, which Upsert returns, and by
// the errors of calls naming a bucket outside [0, Buckets). errors.Is-checkable.
var ErrInvalid = errors.New("reminder: invalid entry")

// MaxIDBytes bounds the grain type, key and reminder name of an entry
// together, so that every table can index them (PostgreSQL's B-tree rows
// hold at most ~2.7 KB).
const MaxIDBytes = 2048

// Validate rejects entries a Table must not store: empty grain type, key or
// name, an identity longer than MaxIDBytes, or a period that is not
// positive.
func (e Entry) Validate() error {
	switch {
	case e.Grain.Type == "" || e.Grain.Key == "":
		return fmt.Errorf("%w: grain id %q must have a type and a key", ErrInvalid, e.Grain.String())
	case len(e.Grain.Type)+len(e.Grain.Key)+len(e.Name) > MaxIDBytes:
		return fmt.Errorf("%w: grain type, key and reminder name are %d bytes together; at most %d",
			ErrInvalid, len(e.Grain.Type)+len(e.Grain.Key)+len(e.Name), MaxIDBytes)
	case e.Name == "":
		return fmt.Errorf("%w: name must not be empty", ErrInvalid)
	case e.Period <= 0:
		return fmt.Errorf("%w: period %v must be positive", ErrInvalid, e.Period)
	}
	return nil
}

// CheckBucket returns an error wrapping ErrInvalid if b is not a bucket.
func CheckBucket(b int) error {
	if b < 0 || b >= Buckets {
		return fmt.Errorf("%w: bucket %d is outside [0, %d)", ErrInvalid, b, Buckets)
	}
	return nil
}
