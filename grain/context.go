package grain

import (
	"context"

	"go.uber.org/zap"
)

// Context is what the runtime gives a grain's factory: the grain's identity,
// a Caller for calling other grains, a logger, persistent state and control
// over its own lifetime. It is valid for the life of the activation and may
// be kept in the implementation struct.
//
// Context implements Caller, so a grain calls another grain with
// NewXxxRef(c, key).
type Context interface {
	Caller

	// ID returns the identity of this grain.
	ID() ID
	// Logger returns a logger with the silo and grain ids as fields.
	Logger() *zap.Logger
	// DeactivateOnIdle asks the runtime to deactivate this activation as
	// soon as the current turn ends and no call is waiting, instead of at
	// the end of its collection age. State is written as for any
	// deactivation.
	DeactivateOnIdle()
	// AttachState binds a persistent state to this activation and returns
	// the storage it reads and writes. It is called by NewState during the
	// factory; grain code uses NewState instead.
	AttachState(name string, cfg StateConfig, s Persistent) StateStore
}

// Activator is implemented by grains that need to run code when activated,
// after their declared states were loaded and before the first call is
// served. An error fails the activation; the call that triggered it gets
// the error and the next call tries again.
type Activator interface {
	OnActivate(ctx context.Context) error
}

// Deactivator is implemented by grains that need to run code before they are
// deactivated. Changed state is written after OnDeactivate returns. An error
// is logged; deactivation proceeds.
type Deactivator interface {
	OnDeactivate(ctx context.Context, reason DeactivationReason) error
}

// DeactivationReason says why an activation is being deactivated.
type DeactivationReason uint8

const (
	// DeactivateIdle: the activation was idle for its collection age.
	DeactivateIdle DeactivationReason = iota + 1
	// DeactivateRequested: the grain called DeactivateOnIdle.
	DeactivateRequested
	// DeactivateSiloStopping: the silo is shutting down gracefully.
	DeactivateSiloStopping
	// DeactivateFailed: a grain method panicked or state failed to write;
	// state is not written. OnDeactivate is not called in this case.
	DeactivateFailed
)

func (r DeactivationReason) String() string {
	switch r {
	case DeactivateIdle:
		return "idle"
	case DeactivateRequested:
		return "requested"
	case DeactivateSiloStopping:
		return "silo stopping"
	case DeactivateFailed:
		return "failed"
	}
	return "unknown"
}
