// Package bank exercises imports, name overrides, struct results, no-arg
// and error-only methods, and directives in doc comments.
package bank

import (
	"context"
	"time"

	"github.com/granary-rt/granary/codegen/testdata/golden/shared/money"
)

// Account is a bank account.
//
//granary:grain name=bank.Account
type Account interface {
	// Deposit adds amount and returns the new balance.
	Deposit(ctx context.Context, amount money.Amount, at time.Time) (balance money.Amount, err error)
	// Balance returns the balance.
	//
	//granary:readonly
	Balance(ctx context.Context) (money.Amount, error)
	Statement(ctx context.Context, since time.Time, limit int) (Statement, error) //granary:readonly
	Last(ctx context.Context) (*Entry, error)
	Price(ctx context.Context, p money.Price) (money.Price, error)
	Fill(ctx context.Context, b money.Basket) (money.Basket, error)
	Freeze(ctx context.Context, d time.Duration) error
	Close(ctx context.Context) error
	// Audit records a message; nobody waits for it.
	//
	//granary:oneway
	Audit(ctx context.Context, msg string, at time.Time) error
}

// Statement is a struct result.
type Statement struct {
	Opening money.Amount
	Closing money.Amount
	Entries []Entry
}

// Entry is a plain value.
type Entry struct {
	At     time.Time
	Amount money.Amount
	Memo   string
	Tags   [4]string
}
