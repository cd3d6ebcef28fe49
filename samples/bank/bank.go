// Package bank is a Granary sample: bank accounts as grains. Each account
// keeps its balance and recent history in persistent state, written through
// to storage before a deposit or withdrawal returns. An overdraft is a
// domain error that reaches the caller and matches errors.Is.
package bank

//go:generate go run github.com/granary-rt/granary/codegen/cmd/granary-gen

import (
	"context"
	"time"

	"github.com/granary-rt/granary/grain"
)

// Domain errors. They keep their identity across processes because they are
// defined with grain.NewError.
var (
	ErrInsufficientFunds = grain.NewError("bank.insufficient_funds", "bank: insufficient funds")
	ErrInvalidAmount     = grain.NewError("bank.invalid_amount", "bank: amount must be positive")
)

// Account is a bank account, keyed by account number.
//
//granary:grain name=bank.Account
type Account interface {
	// Deposit adds amount (in cents) and returns the new balance.
	Deposit(ctx context.Context, amount int64) (int64, error)
	// Withdraw removes amount and returns the new balance, or fails with
	// ErrInsufficientFunds and changes nothing.
	Withdraw(ctx context.Context, amount int64) (int64, error)
	// Balance returns the balance in cents.
	Balance(ctx context.Context) (int64, error) //granary:readonly
	// History returns up to n of the latest transactions, newest first.
	History(ctx context.Context, n int) ([]Transaction, error) //granary:readonly
}

// Transaction is one deposit (positive amount) or withdrawal (negative).
type Transaction struct {
	Amount  int64     `msgpack:"amount"`
	Balance int64     `msgpack:"balance"`
	At      time.Time `msgpack:"at"`
}
