package bank

import (
	"context"
	"fmt"
	"time"

	"github.com/granary-rt/granary/grain"
)

// historyLimit bounds the transactions an account keeps in its state.
const historyLimit = 50

type accountState struct {
	Balance int64         `msgpack:"balance"`
	History []Transaction `msgpack:"history"`
}

type account struct {
	ctx   grain.Context
	state *grain.State[accountState]
	now   func() time.Time
}

// NewAccount is the Account factory to register with a silo:
//
//	bank.RegisterAccount(silo, bank.NewAccount)
func NewAccount(c grain.Context) Account {
	return &account{ctx: c, state: grain.NewState[accountState](c, "account"), now: time.Now}
}

func (a *account) Deposit(ctx context.Context, amount int64) (int64, error) {
	if amount <= 0 {
		return 0, fmt.Errorf("deposit %d: %w", amount, ErrInvalidAmount)
	}
	return a.apply(ctx, amount)
}

func (a *account) Withdraw(ctx context.Context, amount int64) (int64, error) {
	if amount <= 0 {
		return 0, fmt.Errorf("withdraw %d: %w", amount, ErrInvalidAmount)
	}
	if b := a.state.Value.Balance; amount > b {
		return 0, fmt.Errorf("withdraw %d from %s with balance %d: %w", amount, a.ctx.ID().Key, b, ErrInsufficientFunds)
	}
	return a.apply(ctx, -amount)
}

// apply records a transaction and writes the state through before the call
// returns, so an acknowledged deposit survives a crash of the silo.
//
// When the write fails the change must not be kept, and it must not be
// undone by hand either: the write may have landed (grain.OutcomeOf the
// error says whether storage refused it or did not say). The runtime tears
// the activation down after a failed write, and the next call reloads the
// balance that storage really holds.
func (a *account) apply(ctx context.Context, amount int64) (int64, error) {
	s := &a.state.Value
	s.Balance += amount
	s.History = append(s.History, Transaction{Amount: amount, Balance: s.Balance, At: a.now().UTC()})
	if len(s.History) > historyLimit {
		s.History = s.History[len(s.History)-historyLimit:]
	}
	if err := a.state.Write(ctx); err != nil {
		return 0, fmt.Errorf("account %s: %w", a.ctx.ID().Key, err)
	}
	return s.Balance, nil
}

func (a *account) Balance(ctx context.Context) (int64, error) { return a.state.Value.Balance, nil }

func (a *account) History(ctx context.Context, n int) ([]Transaction, error) {
	h := a.state.Value.History
	n = min(max(n, 0), len(h))
	out := make([]Transaction, n)
	for i := range n {
		out[i] = h[len(h)-1-i]
	}
	return out, nil
}
