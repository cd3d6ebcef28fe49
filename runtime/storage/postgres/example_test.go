package postgres_test

import (
	"context"
	"errors"
	"log"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/reminder"
	"github.com/granary-rt/granary/runtime/storage"
	"github.com/granary-rt/granary/runtime/storage/postgres"
)

// A provider on its own pool. (Examples here are compiled, not run: they
// need a server.)
func ExampleNew() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := postgres.New(ctx, postgres.Config{DSN: "postgres://granary@localhost:5432/granary?sslmode=disable"})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	k := storage.Key{GrainType: "bank.Account", GrainKey: "42", State: "balance"}
	_, etag, err := p.Read(ctx, k) // etag "": no record yet
	if err != nil {
		log.Fatal(err)
	}
	if _, err := p.Write(ctx, k, []byte("100"), etag); errors.Is(err, storage.ErrConflict) {
		log.Print("someone else wrote first")
	}
}

// State and reminders sharing one pool.
func ExampleNewReminderTable() {
	ctx := context.Background()
	cfg, err := postgres.ParsePoolConfig("host=db dbname=granary user=granary")
	if err != nil {
		log.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	state, err := postgres.New(ctx, postgres.Config{Pool: pool})
	if err != nil {
		log.Fatal(err)
	}
	reminders, err := postgres.NewReminderTable(ctx, postgres.ReminderConfig{Pool: pool, Cluster: "prod"})
	if err != nil {
		log.Fatal(err)
	}
	_ = state // for the silo's config
	_, err = reminders.Upsert(ctx, reminder.Entry{
		Grain:  grain.ID{Type: "bank.Account", Key: "42"},
		Name:   "interest",
		Start:  time.Now().Add(time.Hour),
		Period: 24 * time.Hour,
	})
	if err != nil {
		log.Fatal(err)
	}
}
