// Command journalv1 is the rolling-upgrade test's silo and client process
// built against version 1 of the Journal (see package node).
package main

import (
	"context"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/internal/upgrade/node"
	"github.com/granary-rt/granary/runtime/internal/upgrade/v1/journal"
)

func ack(a journal.Ack, err error) (node.Ack, error) {
	return node.Ack{Method: a.Method, Version: a.Version, Silo: a.Silo}, err
}

func main() {
	node.Main(journal.Version, func(s *runtime.Silo, silo string) { journal.RegisterJournal(s, journal.New(silo)) }, []node.Method{
		{Name: "Append", Call: func(ctx context.Context, c grain.Caller, key, call string) (node.Ack, error) {
			return ack(journal.NewJournalRef(c, key).Append(ctx, call, 1))
		}},
		{Name: "Total", Call: func(ctx context.Context, c grain.Caller, key, call string) (node.Ack, error) {
			return ack(journal.NewJournalRef(c, key).Total(ctx, call))
		}},
		{Name: "Note", Call: func(ctx context.Context, c grain.Caller, key, call string) (node.Ack, error) {
			return ack(journal.NewJournalRef(c, key).Note(ctx, call, 7))
		}},
	})
}
