// Package bank is the grain package of the end-to-end test: the test copies
// it into a temporary directory of the module, runs granary-gen on it and
// runs ../run against the generated code.
package bank

import (
	"context"
	"time"

	"github.com/granary-rt/granary/grain"
)

// ErrInsufficientFunds is a domain error that must survive the wire.
var ErrInsufficientFunds = grain.NewError("bank.insufficient_funds", "bank: insufficient funds")

// Money is an amount in cents.
type Money int64

// Entry is one booking: a copy-free value.
type Entry struct {
	At     time.Time
	Amount Money
	Memo   string
}

// Statement is a struct result with references in it.
type Statement struct {
	Owner   string
	Balance Money
	Entries []Entry
	Labels  map[string]string
	Last    *Entry
}

// Account is a bank account.
//
//granary:grain name=bank.Account
type Account interface {
	// Deposit books amount and returns the new balance.
	Deposit(ctx context.Context, amount Money, memo string, at time.Time) (balance Money, err error)
	Withdraw(ctx context.Context, amount Money) (Money, error)
	Balance(ctx context.Context) (Money, error) //granary:readonly
	//granary:readonly
	History(ctx context.Context, limit int) ([]Entry, error)
	Statement(ctx context.Context, labels map[string]string) (Statement, error)
	Find(ctx context.Context, memo *string) (*Entry, error)
	Last(ctx context.Context) (Entry, error)
	// Rename was called SetOwner: its wire name stays.
	Rename(ctx context.Context, owner string) error //granary:method name=SetOwner
	Notify(ctx context.Context, msg string) error   //granary:oneway
	Echo(ctx context.Context, a [3]int8, d time.Duration, ok bool, f float64, b []byte) ([]byte, error)
}
