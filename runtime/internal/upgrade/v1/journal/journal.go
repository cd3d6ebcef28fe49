// Package journal is version 1 of the upgrade test's grain interface.
package journal

//go:generate go run github.com/granary-rt/granary/codegen/cmd/granary-gen

import (
	"context"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/internal/upgrade"
)

// Version is this package's version of the interface.
const Version = "v1"

// Ack is what a call returns: the method that ran, where, and the total.
type Ack struct {
	Method  string
	Version string
	Silo    string
	Total   int64
}

// Journal, version 1.
//
//granary:grain name=upgrade.Journal
type Journal interface {
	// Append adds n to the total.
	Append(ctx context.Context, call string, n int64) (Ack, error)
	Total(ctx context.Context, call string) (Ack, error)
	// Note takes a tag whose type version 2 changes.
	Note(ctx context.Context, call string, tag int64) (Ack, error)
	Log(ctx context.Context) ([]upgrade.Record, error) //granary:readonly
}

type journal struct{ k *upgrade.Core }

// New returns the factory of version-1 journals on silo.
func New(silo string) func(grain.Context) Journal {
	return func(c grain.Context) Journal { return &journal{k: upgrade.NewCore(c, Version, silo)} }
}

func (j *journal) ack(ctx context.Context, call, method string, n int64) (Ack, error) {
	total, err := j.k.Record(ctx, call, method, n)
	return Ack{Method: method, Version: Version, Silo: j.k.Silo, Total: total}, err
}

func (j *journal) Append(ctx context.Context, call string, n int64) (Ack, error) {
	return j.ack(ctx, call, "Append", n)
}

func (j *journal) Total(ctx context.Context, call string) (Ack, error) {
	return j.ack(ctx, call, "Total", 0)
}

func (j *journal) Note(ctx context.Context, call string, tag int64) (Ack, error) {
	return j.ack(ctx, call, "Note", 0)
}

func (j *journal) Log(ctx context.Context) ([]upgrade.Record, error) { return j.k.Log(), nil }
