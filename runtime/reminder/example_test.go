package reminder_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/reminder"
)

func ExampleMemory() {
	ctx := context.Background()
	table := reminder.NewMemory()
	alice := grain.ID{Type: "bank.Account", Key: "alice"}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, name := range []string{"statement", "interest"} {
		if _, err := table.Upsert(ctx, reminder.Entry{Grain: alice, Name: name, Start: start, Period: 24 * time.Hour}); err != nil {
			fmt.Println(err)
		}
	}
	es, _ := table.ListGrain(ctx, alice)
	for _, e := range es {
		fmt.Println(e.Name, e.Period)
	}
	b := reminder.BucketOf(reminder.Hash(alice))
	inBucket, _ := table.ListBucket(ctx, b)
	fmt.Println("bucket", b, "holds", len(inBucket))

	_, err := table.Upsert(ctx, reminder.Entry{Grain: alice, Name: "statement", Start: start, Period: time.Hour, Etag: "stale"})
	fmt.Println(errors.Is(err, reminder.ErrConflict))
	// Output:
	// interest 24h0m0s
	// statement 24h0m0s
	// bucket 250 holds 2
	// true
}
