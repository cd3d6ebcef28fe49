package grain

import (
	goruntime "runtime"
	"time"
)

// TypeConfig is the per-type configuration assembled from TypeOptions. Zero
// fields mean "use the silo's default".
type TypeConfig struct {
	// CollectionAge is how long an activation may stay idle before it is
	// deactivated. Silo default: 15 minutes.
	CollectionAge time.Duration
	// MailboxLimit is how many calls may wait for one activation; beyond it
	// calls fail at once with ErrOverloaded. Silo default: 1000.
	MailboxLimit int
	// Placement picks the silo for a new activation (see Placement).
	// Default: random.
	Placement Placement
	// Reentrant lets any call of the type start while another call of
	// the same activation waits on a call it made (see Reentrant).
	Reentrant bool
	// CallChainReentrancy lets a call start while a call of the same
	// activation waits on it, through its call chain (see
	// WithCallChainReentrancy).
	CallChainReentrancy bool
	// IncomingFilters see every call to the type (see
	// WithIncomingFilters).
	IncomingFilters []Filter
	// StatelessWorkers, when positive, makes the type a stateless worker
	// (see StatelessWorker) with at most this many activations per grain
	// id on one silo. 0: an ordinary grain type.
	StatelessWorkers int
}

// MaxStatelessWorkers is the most activations per grain id and silo a
// stateless worker type may ask for; a silo refuses to start with a type
// registered with more.
const MaxStatelessWorkers = 1024

// Placement is a strategy that picks the silo of a new activation among the
// active silos hosting the grain type, in the membership view of the silo
// placing it.
//
// The strategy is an option of the type's registration, so only a silo
// that hosts the type places its grains: the silo that receives a call for
// a grain active nowhere — the caller's own silo for a call from a grain
// or from Silo.Client(), the gateway for a call from a runtime.Client — if
// it hosts the type; otherwise a hosting silo chosen at random, to which
// the call is passed. The silo chosen hosts the grain without placing it
// again, and an activation stays where it was placed until it is
// deactivated: placement does not move grains when the membership changes.
type Placement uint8

const (
	// PlaceRandom picks a silo uniformly at random (the default).
	PlaceRandom Placement = iota
	// PlacePreferLocal activates on the placing silo: the silo of the
	// calling grain or of Silo.Client(), or the gateway that received a
	// client's call. If that silo does not host the type (or is shutting
	// down), on a silo chosen at random.
	PlacePreferLocal
	// PlaceHash picks the silo by rendezvous hashing: the silo with the
	// highest hash of (silo id, grain type, key). The same grain lands on
	// the same silo wherever its first call enters the cluster, as long as
	// the silos' membership views agree; while a silo joins or leaves, a
	// grain goes to its owner in the placing silo's view.
	PlaceHash
	// PlaceLeastActivations picks the silo with the fewest activations by
	// the placing silo's reckoning: its own current count, and for each
	// other silo the count that silo last published through membership
	// (it publishes a changed count at most every few seconds) plus the
	// activations the placing silo placed there since, over a few seconds
	// at most. Ties are broken at random. Two silos placing at once see each other's placements only
	// at the next announcement.
	PlaceLeastActivations
)

func (p Placement) String() string {
	switch p {
	case PlaceRandom:
		return "random"
	case PlacePreferLocal:
		return "prefer-local"
	case PlaceHash:
		return "hash"
	case PlaceLeastActivations:
		return "least-activations"
	}
	return "unknown"
}

// TypeOption configures a grain type at registration. Options are sealed:
// only this package defines them.
type TypeOption interface {
	applyType(*TypeConfig)
}

type typeOptionFunc func(*TypeConfig)

func (f typeOptionFunc) applyType(c *TypeConfig) { f(c) }

// WithCollectionAge sets how long an activation of this type may be idle
// before it is deactivated and its state written.
func WithCollectionAge(d time.Duration) TypeOption {
	return typeOptionFunc(func(c *TypeConfig) { c.CollectionAge = d })
}

// WithMailboxLimit bounds the number of calls waiting for one activation of
// this type. Calls beyond it fail at once with ErrOverloaded.
func WithMailboxLimit(n int) TypeOption {
	return typeOptionFunc(func(c *TypeConfig) { c.MailboxLimit = n })
}

// WithPlacement sets the placement strategy of new activations of this type.
func WithPlacement(p Placement) TypeOption {
	return typeOptionFunc(func(c *TypeConfig) { c.Placement = p })
}

// Reentrant makes the grain type reentrant: while a turn of an activation
// waits on a call it made to another grain, any other call of the same
// activation may start; the waiting turn continues once its call returned
// and the turn that runs then waits on a call of its own or ends. One
// goroutine runs the activation's code at any instant all the same, so the
// grain needs no locks; but its state may change across an outgoing call,
// so code after a call must not rely on what it read before. Without it
// (the default) a turn that waits holds the activation: only calls whose
// method is marked //granary:interleave, read-only calls while only
// read-only turns wait, and (with WithCallChainReentrancy) calls on the
// waiting turn's own call chain may start.
func Reentrant() TypeOption {
	return typeOptionFunc(func(c *TypeConfig) { c.Reentrant = true })
}

// WithCallChainReentrancy admits a call into an activation that waits on
// it: when grain A's turn calls B and B (directly, or through other
// grains) calls A back, the call back runs while A's turn waits, instead
// of failing with ErrDeadlock. Other calls still wait for the turn to end.
// Calls that arrive during the activation's OnActivate or OnDeactivate
// fail with ErrDeadlock whatever the options.
func WithCallChainReentrancy() TypeOption {
	return typeOptionFunc(func(c *TypeConfig) { c.CallChainReentrancy = true })
}

// StatelessWorker makes the type a stateless worker, for grains whose
// activations hold no state bound to their identity (a parser, a fan-out
// helper, a cache of something shared): a silo runs several activations of
// one grain id, each a normal activation that runs one call at a time.
//
//   - A call runs on the caller's silo: a grain's call on the silo of the
//     calling grain, a client's call on the silo whose gateway receives
//     it, Silo.Client's on that silo. A silo that does not host the type
//     sends the call to one that does, chosen at random.
//   - The activations are never registered in the grain directory, and
//     calls to them make no etcd request at all.
//   - A silo starts with one activation per grain id, and adds one when a
//     call arrives while every activation it has is busy (running a turn
//     or holding queued calls), up to max. Each activation has its own
//     mailbox of the type's mailbox limit, so one silo queues at most max
//     times that many calls per grain id.
//   - Every activation is collected once idle for the type's collection
//     age, the last one too; calls go to the first idle activation in
//     creation order, so under lighter load the later ones fall idle and
//     the pool shrinks.
//   - A stateless worker has no persistent state and no reminders: an
//     activation that declares a state fails to activate, and
//     RegisterReminder fails with ErrBadRequest. Timers work, per
//     activation. WithPlacement has no effect on it.
//
// max <= 0 means runtime.GOMAXPROCS(0) at the time the option is made;
// more than MaxStatelessWorkers is refused when the silo starts.
func StatelessWorker(max int) TypeOption {
	if max <= 0 {
		max = goruntime.GOMAXPROCS(0)
	}
	return typeOptionFunc(func(c *TypeConfig) { c.StatelessWorkers = max })
}

// NewTypeConfig applies opts to a zero TypeConfig.
func NewTypeConfig(opts ...TypeOption) TypeConfig {
	var c TypeConfig
	for _, o := range opts {
		o.applyType(&c)
	}
	return c
}

// StateConfig is the per-state configuration assembled from StateOptions.
type StateConfig struct {
	// Storage names the storage provider; "" is the silo's default.
	Storage string
	// Policy says when the runtime writes the state.
	Policy WritePolicy
	// MaxDelay is the longest a change waits under WriteBehind.
	MaxDelay time.Duration
}

// WritePolicy says when the runtime writes a state without being asked.
// Whatever the policy, State.Write writes at once, and changed state is
// written when the activation is deactivated.
type WritePolicy uint8

const (
	// WriteOnDeactivate (the default): changes are written when the
	// activation is deactivated (idle, DeactivateOnIdle, silo shutdown).
	// A crash loses the changes since the last write.
	WriteOnDeactivate WritePolicy = iota
	// WriteThrough: after every call that changed the state, the state is
	// written before the call returns; a failed write fails the call and
	// tears the activation down, so the next call reloads the state from
	// storage and never sees the unwritten change. What a call changed is
	// durable when it returns successfully.
	WriteThrough
	// WriteBehind: a change is written at most MaxDelay after the call
	// that made it, in a turn of its own, batching the changes of the
	// calls in between. A crash loses at most MaxDelay of changes.
	WriteBehind
)

func (p WritePolicy) String() string {
	switch p {
	case WriteOnDeactivate:
		return "write-on-deactivate"
	case WriteThrough:
		return "write-through"
	case WriteBehind:
		return "write-behind"
	}
	return "unknown"
}

// WithWriteThrough writes the state after every call that changed it,
// before the call returns. See WriteThrough.
func WithWriteThrough() StateOption {
	return stateOptionFunc(func(c *StateConfig) { c.Policy = WriteThrough })
}

// WithWriteBehind writes a changed state at most maxDelay after the change.
// See WriteBehind. maxDelay must be positive.
func WithWriteBehind(maxDelay time.Duration) StateOption {
	return stateOptionFunc(func(c *StateConfig) { c.Policy, c.MaxDelay = WriteBehind, maxDelay })
}

// StateOption configures one persistent state.
type StateOption interface {
	applyState(*StateConfig)
}

type stateOptionFunc func(*StateConfig)

func (f stateOptionFunc) applyState(c *StateConfig) { f(c) }

// WithStorage selects a named storage provider configured on the silo.
func WithStorage(name string) StateOption {
	return stateOptionFunc(func(c *StateConfig) { c.Storage = name })
}
