// Package journal is version 2 of the upgrade test's grain interface:
// methods reordered, Version added, Note's tag a string instead of an
// int64, and Append renamed to Add with its wire name kept.
package journal

//go:generate go run github.com/granary-rt/granary/codegen/cmd/granary-gen

import (
	"context"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/internal/upgrade"
)

// Version is this package's version of the interface.
const Version = "v2"

// Ack is what a call returns: the method that ran, where, and the total.
// Its type string is that of version 1 (journal.Ack), so the methods that
// return it keep their fingerprints.
type Ack struct {
	Method  string
	Version string
	Silo    string
	Total   int64
}

// Journal, version 2.
//
//granary:grain name=upgrade.Journal
type Journal interface {
	Log(ctx context.Context) ([]upgrade.Record, error) //granary:readonly
	// Version is new in version 2.
	Version(ctx context.Context, call string) (Ack, error)
	// Note's tag was an int64.
	Note(ctx context.Context, call string, tag string) (Ack, error)
	Total(ctx context.Context, call string) (Ack, error)
	// Add was called Append: it keeps that wire name.
	//
	//granary:method name=Append
	Add(ctx context.Context, call string, n int64) (Ack, error)
}

type journal struct{ k *upgrade.Core }

// New returns the factory of version-2 journals on silo.
func New(silo string) func(grain.Context) Journal {
	return func(c grain.Context) Journal { return &journal{k: upgrade.NewCore(c, Version, silo)} }
}

func (j *journal) ack(ctx context.Context, call, method string, n int64) (Ack, error) {
	total, err := j.k.Record(ctx, call, method, n)
	return Ack{Method: method, Version: Version, Silo: j.k.Silo, Total: total}, err
}

func (j *journal) Log(ctx context.Context) ([]upgrade.Record, error) { return j.k.Log(), nil }

func (j *journal) Version(ctx context.Context, call string) (Ack, error) {
	return j.ack(ctx, call, "Version", 0)
}

func (j *journal) Note(ctx context.Context, call string, tag string) (Ack, error) {
	return j.ack(ctx, call, "Note", 0)
}

func (j *journal) Total(ctx context.Context, call string) (Ack, error) {
	return j.ack(ctx, call, "Total", 0)
}

func (j *journal) Add(ctx context.Context, call string, n int64) (Ack, error) {
	return j.ack(ctx, call, "Add", n)
}
