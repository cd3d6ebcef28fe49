// Package testgrains holds the grain types the runtime's tests and
// benchmarks use.
package testgrains

//go:generate go run github.com/granary-rt/granary/codegen/cmd/granary-gen

import (
	"context"
	"time"
)

// Counter is a grain with a persisted counter.
//
//granary:grain name=test.Counter
type Counter interface {
	Add(ctx context.Context, n int64) (int64, error)
	Get(ctx context.Context) (int64, error) //granary:readonly
	// Bump adds n without a reply.
	Bump(ctx context.Context, n int64) error //granary:oneway
	// AddDurable adds n and writes the state before returning.
	AddDurable(ctx context.Context, n int64) (int64, error)
	// Deactivate asks for deactivation when idle.
	Deactivate(ctx context.Context) error
}

// Probe is a grain whose methods let tests observe scheduling and failure.
//
//granary:grain name=test.Probe
type Probe interface {
	// Enter records that a turn is running, yields for d, and fails if
	// another turn of the same activation ran meanwhile.
	Enter(ctx context.Context, d time.Duration) (int, error)
	// Wait blocks until the named barrier opens or ctx ends.
	Wait(ctx context.Context, barrier string) error
	// Panic panics.
	Panic(ctx context.Context) error
	// Echo modifies its argument and returns it.
	Echo(ctx context.Context, in []string) ([]string, error)
	// Fail returns ErrDomain.
	Fail(ctx context.Context) error
	// Return returns the sentinel error with the given code, wrapped.
	Return(ctx context.Context, code string) error
	// Ping does nothing.
	Ping(ctx context.Context) error
	// Notify is a one-way call that records msg.
	Notify(ctx context.Context, msg string) error //granary:oneway
	// SumInts returns the sum of vs: a slice argument of a scalar type.
	SumInts(ctx context.Context, vs []int64) (int64, error)
	// SumItems returns the sum of the items' N: a slice argument of a
	// struct type.
	SumItems(ctx context.Context, items []Item) (int64, error)
	// Items returns n items: a reply of a slice of structs.
	Items(ctx context.Context, n int) ([]Item, error)
}

// Item is an element of Probe.SumItems' argument.
type Item struct {
	Name string
	N    int64
	At   time.Time
}

// Clock is a grain with timers, reminders and states under each write
// policy.
//
//granary:grain name=test.Clock
type Clock interface {
	// StartTimer registers the grain's timer.
	StartTimer(ctx context.Context, spec TimerSpec) error
	// StopTimer stops it.
	StopTimer(ctx context.Context) error
	// TimerTicks returns how often the timer fired in this activation.
	TimerTicks(ctx context.Context) (int, error)
	// Hold holds the turn for d, recording overlaps with timer callbacks.
	Hold(ctx context.Context, d time.Duration) error
	// Remind registers (or updates) a reminder.
	Remind(ctx context.Context, name string, due, period time.Duration) error
	// Forget unregisters a reminder.
	Forget(ctx context.Context, name string) error
	// ReminderNames lists the grain's reminders.
	ReminderNames(ctx context.Context) ([]string, error)
	// Counts returns the write-through state: reminder ticks per name,
	// missed ticks reported, and the last SetThrough value.
	Counts(ctx context.Context) (ClockCounts, error)
	// SetThrough sets the write-through state's value.
	SetThrough(ctx context.Context, v int64) error
	// SetBehind sets the write-behind state's value.
	SetBehind(ctx context.Context, v int64) error
	// SetLazy sets the write-on-deactivate state's value.
	SetLazy(ctx context.Context, v int64) error
}

// TimerSpec configures Clock.StartTimer.
type TimerSpec struct {
	Due, Period time.Duration
	// Hold is how long each callback runs.
	Hold      time.Duration
	KeepAlive bool
	// SetBehind, if not 0, is stored in the write-behind state by each
	// callback.
	SetBehind int64
}

// ClockCounts is Clock's write-through state.
type ClockCounts struct {
	Ticks  map[string]int `msgpack:"ticks"`
	Missed int            `msgpack:"missed"`
	Value  int64          `msgpack:"value"`
}
