package grain

import (
	"context"
	"time"

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
	// SiloID returns the id of the silo hosting this activation (its
	// runtime.Config.SiloID).
	SiloID() string
	// ActivationID returns the identity of this activation, for logs and
	// traces: unique in the cluster over time, so that two activations of
	// the same grain (one after another, or on two silos at once after a
	// partition) differ. The runtime forms it from the silo id, the silo's
	// incarnation (which changes when the silo restarts or rejoins) and a
	// sequence number of the activation on that silo, as
	// "silo-a/1042/12"; treat it as opaque.
	ActivationID() string
	// Logger returns a logger with the silo, grain and activation ids as
	// fields ("silo", "grain", "activation").
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

	// RegisterTimer calls fn after due, then every period after the end of
	// the previous callback (period 0: once). The callback runs as a turn
	// of this activation: never concurrently with a call or with itself.
	// A timer belongs to the activation: it is stopped when the activation
	// is deactivated, and it does not keep the activation alive unless
	// the KeepAlive option is given. Register timers from OnActivate or a
	// grain method.
	RegisterTimer(due, period time.Duration, fn func(ctx context.Context), opts ...TimerOption) Timer

	// RegisterReminder creates or updates the durable reminder name of this
	// grain: its ReceiveReminder method is called at due from now, then
	// every period, whether or not the grain is active, until
	// UnregisterReminder. Reminders survive deactivation, silo crashes and
	// cluster restarts. The grain must implement Remindable: otherwise,
	// and when called from the factory (before the runtime can tell),
	// RegisterReminder fails at once with an error that matches
	// ErrBadRequest and names the grain type, and writes nothing (did not
	// run). Call it from OnActivate or a grain method.
	RegisterReminder(ctx context.Context, name string, due, period time.Duration) error
	// UnregisterReminder deletes the reminder; deleting a missing one
	// fails with an error matching ErrNotFound. It works whether or not
	// the grain implements Remindable, so a type that no longer does can
	// delete the reminders it registered before.
	UnregisterReminder(ctx context.Context, name string) error
	// Reminders lists this grain's reminders, sorted by name.
	Reminders(ctx context.Context) ([]Reminder, error)
}

// Timer is a registered timer; Stop cancels it. A callback already queued
// may still run once.
type Timer interface {
	Stop()
}

// TimerOption configures a timer.
type TimerOption interface {
	applyTimer(*TimerConfig)
}

// TimerConfig is assembled from TimerOptions.
type TimerConfig struct {
	// KeepAlive makes the timer's callbacks count as activity, so the
	// activation is not collected while the timer runs.
	KeepAlive bool
}

type timerOptionFunc func(*TimerConfig)

func (f timerOptionFunc) applyTimer(c *TimerConfig) { f(c) }

// KeepAlive makes the timer's callbacks count as activity: the activation
// is not deactivated for idleness while the timer keeps firing.
func KeepAlive() TimerOption { return timerOptionFunc(func(c *TimerConfig) { c.KeepAlive = true }) }

// NewTimerConfig applies opts to a zero TimerConfig.
func NewTimerConfig(opts ...TimerOption) TimerConfig {
	var c TimerConfig
	for _, o := range opts {
		o.applyTimer(&c)
	}
	return c
}

// Reminder describes a registered durable reminder.
type Reminder struct {
	Name string
	// Start is the first due time; ticks are due at Start + k*Period.
	Start  time.Time
	Period time.Duration
}

// Remindable is implemented by grains that register reminders.
//
// A reminder whose grain type stopped implementing Remindable after it was
// registered stays in the reminder table: the runtime does not delete a
// grain's durable data on one silo's say (during a rolling upgrade other
// silos may still run the old type). Its ticks are refused without
// running and dropped, and back off, from 1 s up to one tick every 10
// minutes; the refusal is logged as an error at the 1st, 2nd, 4th, 8th...
// refusal in a row. The first tick the grain accepts ends the backoff.
// Delete such reminders with UnregisterReminder.
type Remindable interface {
	// ReceiveReminder is called, as a turn, for every tick of one of the
	// grain's reminders. An error is logged; the reminder keeps ticking.
	ReceiveReminder(ctx context.Context, tick Tick) error
}

// Tick is one firing of a reminder.
type Tick struct {
	Name string
	// Due is when the tick was due. A tick fires at or after Due.
	Due time.Time
	// Period is the reminder's period.
	Period time.Duration
	// Missed counts the ticks due before this one that did not fire (the
	// silo that owned the reminder crashed, or the cluster was down):
	// they are folded into this tick, which fires late. 0 normally.
	Missed int
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
