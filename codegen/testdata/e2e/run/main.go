// Command run exercises the code granary-gen generated for ../bank through a
// fake silo that dispatches like a remote one: every call's arguments and
// reply make a msgpack round trip through the generated structs.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/zap"

	"github.com/granary-rt/granary/codegen/testdata/e2e/bank"
	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/grain/codec"
)

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	s := newSilo()
	bank.RegisterAccount(s, newAccount)
	bank.RegisterLedger(s, func(c grain.Context) bank.Ledger { return &ledger{c: c} })

	for _, t := range []*grain.TypeDesc{bank.AccountType, bank.LedgerType} {
		for _, m := range t.Methods {
			fmt.Printf("%s %s%s flags=%s reply=%t\n", t.Name, m.Name, m.Signature, flagNames(m.Flags), m.NewReply != nil)
		}
	}

	alice := bank.NewAccountRef(s, "alice")
	bob := bank.NewAccountRef(s, "bob")
	fmt.Println("id:", alice.ID())
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)

	show := func(what string, v any, err error) {
		if err != nil {
			fmt.Printf("%s: error %q insufficient=%t\n", what, err, errors.Is(err, bank.ErrInsufficientFunds))
			return
		}
		fmt.Printf("%s: %v\n", what, v)
	}
	b, err := alice.Deposit(ctx, 100, "salary", t0)
	show("deposit", b, err)
	b, err = alice.Deposit(ctx, 50, "gift", t0.Add(time.Hour))
	show("deposit", b, err)
	b, err = bob.Deposit(ctx, 7, "coins", t0)
	show("deposit bob", b, err)
	b, err = alice.Withdraw(ctx, 1000)
	show("withdraw", b, err)
	b, err = alice.Withdraw(ctx, 30)
	show("withdraw", b, err)
	b, err = alice.Balance(ctx)
	show("balance", b, err)
	h, err := alice.History(ctx, 2)
	show("history", formatEntries(h), err)
	st, err := alice.Statement(ctx, map[string]string{"tier": "gold", "branch": "north"})
	show("statement", fmt.Sprintf("owner=%q balance=%d entries=%s labels=%v last=%s",
		st.Owner, st.Balance, formatEntries(st.Entries), st.Labels, formatEntry(st.Last)), err)
	memo := "gift"
	e, err := alice.Find(ctx, &memo)
	show("find gift", formatEntry(e), err)
	e, err = alice.Find(ctx, nil)
	show("find nil", formatEntry(e), err)
	last, err := alice.Last(ctx)
	show("last", formatEntry(&last), err)
	show("rename", nil, alice.Rename(ctx, "Alice A."))
	st, err = alice.Statement(ctx, nil)
	show("renamed", fmt.Sprintf("owner=%q labels=%v", st.Owner, st.Labels), err)
	show("notify", nil, alice.Notify(ctx, "hello"))
	echo, err := alice.Echo(ctx, [3]int8{1, -2, 3}, 1500*time.Millisecond, true, 2.5, []byte("bytes"))
	show("echo", string(echo), err)

	// A caller built from another signature of Deposit, and one that
	// calls a method the type does not have, reach no method.
	for _, m := range []*grain.MethodDesc{
		{Name: "Deposit", Signature: "(int64) (int64, error)", Fingerprint: grain.Fingerprint("(int64) (int64, error)")},
		{Name: "Rename", Signature: "(string) error", Fingerprint: grain.Fingerprint("(string) error")},
	} {
		_, err := s.Invoke(ctx, &grain.Call{Target: alice.ID(), Type: bank.AccountType, Method: m, Args: &grain.Args1[int64]{V0: 1}})
		fmt.Printf("call %s: %v (incompatible=%t unknown=%t)\n", m, err, errors.Is(err, grain.ErrIncompatible), errors.Is(err, grain.ErrUnknownMethod))
	}

	total, err := bank.NewLedgerRef(s, "all").Total(ctx, []string{"alice", "bob"})
	show("total", total, err)
	if err := checkWire(ctx, s); err != nil {
		return err
	}
	fmt.Println("notified:", strings.Join(s.account("alice").notes, ","))
	return nil
}

// silo is a fake grain.Caller and grain.Registry that dispatches through
// the generated descriptors exactly like a remote silo would.
type silo struct {
	types     map[string]*grain.TypeDesc
	factories map[string]grain.Factory
	active    map[grain.ID]any
}

func newSilo() *silo {
	return &silo{types: map[string]*grain.TypeDesc{}, factories: map[string]grain.Factory{}, active: map[grain.ID]any{}}
}

func (s *silo) RegisterGrainType(t *grain.TypeDesc, f grain.Factory, opts ...grain.TypeOption) {
	s.types[t.Name] = t
	s.factories[t.Name] = f
}

func (s *silo) Invoke(ctx context.Context, call *grain.Call) (any, error) {
	// The caller's side: encode the arguments.
	data, err := msgpack.Marshal(call.Args)
	if err != nil {
		return nil, fmt.Errorf("encode args: %w", err)
	}

	// The silo's side: find the type by name, decode, dispatch, encode.
	typ, ok := s.types[call.Target.Type]
	if !ok {
		return nil, grain.ErrUnknownGrainType
	}
	m, err := typ.Resolve(call.Method.Name, call.Method.Fingerprint)
	if err != nil {
		return nil, err
	}
	args := m.NewArgs()
	if err := codec.Unmarshal(data, args); err != nil {
		return nil, fmt.Errorf("decode args: %w", err)
	}
	impl, ok := s.active[call.Target]
	if !ok {
		impl = s.factories[typ.Name](&grainContext{silo: s, id: call.Target})
		s.active[call.Target] = impl
	}
	reply, err := m.Invoke(ctx, impl, args)
	if err != nil {
		return nil, &grain.RemoteError{Code: grain.CodeOf(err), Message: err.Error()}
	}
	if m.NewReply == nil {
		if reply != nil {
			return nil, fmt.Errorf("%s returned a reply", m.Name)
		}
		return nil, nil
	}
	if data, err = msgpack.Marshal(reply); err != nil {
		return nil, fmt.Errorf("encode reply: %w", err)
	}

	// The caller's side again: decode the reply.
	out := m.NewReply()
	if err := codec.Unmarshal(data, out); err != nil {
		return nil, fmt.Errorf("decode reply: %w", err)
	}
	return out, nil
}

func (s *silo) account(key string) *account {
	return s.active[grain.ID{Type: bank.AccountType.Name, Key: key}].(*account)
}

// grainContext is the grain.Context the fake silo gives activations.
type grainContext struct {
	*silo
	id grain.ID
}

func (c *grainContext) ID() grain.ID         { return c.id }
func (c *grainContext) SiloID() string       { return "fake" }
func (c *grainContext) ActivationID() string { return "fake/1/" + c.id.String() }
func (c *grainContext) Logger() *zap.Logger  { return zap.NewNop() }
func (c *grainContext) DeactivateOnIdle()    {}
func (c *grainContext) AttachState(string, grain.StateConfig, grain.Persistent) grain.StateStore {
	panic("no state in this test")
}
func (c *grainContext) RegisterTimer(time.Duration, time.Duration, func(context.Context), ...grain.TimerOption) grain.Timer {
	panic("no timers in this test")
}
func (c *grainContext) RegisterReminder(context.Context, string, time.Duration, time.Duration) error {
	return errors.New("no reminders in this test")
}
func (c *grainContext) UnregisterReminder(context.Context, string) error {
	return errors.New("no reminders in this test")
}
func (c *grainContext) Reminders(context.Context) ([]grain.Reminder, error) { return nil, nil }

type account struct {
	id      grain.ID
	owner   string
	entries []bank.Entry
	notes   []string
}

func newAccount(c grain.Context) bank.Account { return &account{id: c.ID(), owner: c.ID().Key} }

func (a *account) balance() bank.Money {
	var b bank.Money
	for _, e := range a.entries {
		b += e.Amount
	}
	return b
}

func (a *account) Deposit(ctx context.Context, amount bank.Money, memo string, at time.Time) (bank.Money, error) {
	a.entries = append(a.entries, bank.Entry{At: at, Amount: amount, Memo: memo})
	return a.balance(), nil
}

func (a *account) Withdraw(ctx context.Context, amount bank.Money) (bank.Money, error) {
	if amount > a.balance() {
		return 0, fmt.Errorf("withdraw %d from %s: %w", amount, a.id, bank.ErrInsufficientFunds)
	}
	a.entries = append(a.entries, bank.Entry{Amount: -amount, Memo: "withdrawal"})
	return a.balance(), nil
}

func (a *account) Balance(ctx context.Context) (bank.Money, error) { return a.balance(), nil }

func (a *account) History(ctx context.Context, limit int) ([]bank.Entry, error) {
	return a.entries[:min(limit, len(a.entries))], nil
}

func (a *account) Statement(ctx context.Context, labels map[string]string) (bank.Statement, error) {
	last := a.entries[len(a.entries)-1]
	return bank.Statement{Owner: a.owner, Balance: a.balance(), Entries: a.entries, Labels: labels, Last: &last}, nil
}

func (a *account) Find(ctx context.Context, memo *string) (*bank.Entry, error) {
	for _, e := range a.entries {
		if memo != nil && e.Memo == *memo {
			return &e, nil
		}
	}
	return nil, nil
}

func (a *account) Last(ctx context.Context) (bank.Entry, error) {
	return a.entries[len(a.entries)-1], nil
}

func (a *account) Rename(ctx context.Context, owner string) error {
	a.owner = owner
	return nil
}

func (a *account) Notify(ctx context.Context, msg string) error {
	a.notes = append(a.notes, msg)
	return nil
}

func (a *account) Echo(ctx context.Context, arr [3]int8, d time.Duration, ok bool, f float64, b []byte) ([]byte, error) {
	return fmt.Appendf(nil, "%v %v %v %v %s", arr, d, ok, f, b), nil
}

type ledger struct{ c grain.Context }

func (l *ledger) Total(ctx context.Context, accounts []string) (bank.Money, error) {
	var total bank.Money
	for _, key := range accounts {
		b, err := bank.NewAccountRef(l.c, key).Balance(ctx)
		if err != nil {
			return 0, err
		}
		total += b
	}
	return total, nil
}

func flagNames(f grain.MethodFlags) string {
	var names []string
	for _, x := range []struct {
		f    grain.MethodFlags
		name string
	}{{grain.ReadOnly, "readonly"}, {grain.OneWay, "oneway"}, {grain.CopyFree, "copyfree"}} {
		if f.Has(x.f) {
			names = append(names, x.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, "|")
}

func formatEntry(e *bank.Entry) string {
	if e == nil {
		return "<nil>"
	}
	at := "-"
	if !e.At.IsZero() {
		at = e.At.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprintf("{%s %d %s}", at, e.Amount, e.Memo)
}

func formatEntries(es []bank.Entry) string {
	var parts []string
	for i := range es {
		parts = append(parts, formatEntry(&es[i]))
	}
	return "[" + strings.Join(parts, " ") + "]"
}
