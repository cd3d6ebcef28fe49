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
}
