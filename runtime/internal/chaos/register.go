// Package chaos is the fault-injection test of the runtime's guarantees:
// silo processes and an etcd process that a nemesis kills, freezes,
// restarts and partitions, clients recording a history of reads and
// writes of a register grain, and a linearizability check of that history
// (github.com/anishathalye/porcupine). The test lives in this package's
// test files; cmd/chaosnode is the process it starts for etcd and silos.
//
// Building chaosnode with the build tag granary_brokenfencing breaks the
// silo's self-fencing on purpose (see runtime/cluster), so that the test
// can show the checker catches a zombie activation. Nothing else reads the
// tag.
package chaos

//go:generate go run github.com/granary-rt/granary/codegen/cmd/granary-gen

import (
	"context"

	"github.com/granary-rt/granary/grain"
)

// Register is a grain holding one integer, written to storage before a
// Put returns (explicitly, or by the runtime's write-through policy).
//
//granary:grain name=chaos.Register
type Register interface {
	// Get returns the value (0 if never written) and the silo serving it.
	Get(ctx context.Context) (Reading, error) //granary:readonly
	// Put sets the value and writes it before returning; it returns the
	// silo that served it.
	Put(ctx context.Context, value int64) (string, error)
	// Deactivate asks for the activation to be deactivated once idle, so
	// that the next call activates the grain again, maybe elsewhere.
	Deactivate(ctx context.Context) error
}

// Reading is what Register.Get returns.
type Reading struct {
	Value int64  `msgpack:"v"`
	Silo  string `msgpack:"s"`
}

type registerState struct {
	Value int64 `msgpack:"v"`
}

type register struct {
	c       grain.Context
	silo    string
	through bool
	state   *grain.State[registerState]
}

// NewRegister returns a Register factory for a silo named silo (reported
// by Get and Put, to tell in a history which silo served a call). With
// writeThrough the state uses the runtime's write-through policy, which
// writes it after every Put; otherwise Put writes it explicitly and
// restores the old value in memory when the write fails.
func NewRegister(silo string, writeThrough bool) func(grain.Context) Register {
	return func(c grain.Context) Register {
		var opts []grain.StateOption
		if writeThrough {
			opts = append(opts, grain.WithWriteThrough())
		}
		return &register{c: c, silo: silo, through: writeThrough, state: grain.NewState[registerState](c, "register", opts...)}
	}
}

func (r *register) Get(ctx context.Context) (Reading, error) {
	return Reading{Value: r.state.Value.Value, Silo: r.silo}, nil
}

func (r *register) Put(ctx context.Context, value int64) (string, error) {
	old := r.state.Value.Value
	r.state.Value.Value = value
	if r.through {
		return r.silo, nil // the runtime writes before it replies
	}
	if err := r.state.Write(ctx); err != nil {
		// A failed Put must never be visible to a later Get of this
		// activation.
		r.state.Value.Value = old
		return "", err
	}
	return r.silo, nil
}

func (r *register) Deactivate(ctx context.Context) error {
	r.c.DeactivateOnIdle()
	return nil
}
