package cart

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/storage"
)

// Run starts a silo on an embedded etcd with carts that expire after 1.5s,
// walks a cart through write-behind, a price refresh, deactivation and
// expiry by its reminder, checks another one out, and stops the silo. It
// writes what happens to w. cmd/cart calls it.
func Run(ctx context.Context, w io.Writer) error {
	// State lives in memory here so that the demo can show what is
	// stored; reminders live in the silo's embedded etcd, as in production.
	store := storage.NewMemory()
	board := &priceBoard{prices: map[string]int64{"apple": 50, "bread": 225, "coffee": 899}}
	cfg := Config{
		TTL:          1500 * time.Millisecond,
		ExpiryCheck:  time.Second, // the production minimum reminder period
		WriteDelay:   300 * time.Millisecond,
		PriceRefresh: 100 * time.Millisecond,
		Prices:       board.price,
	}
	const collectionAge = 500 * time.Millisecond
	silo, err := runtime.NewSilo(runtime.Config{Storage: map[string]storage.Provider{runtime.DefaultStorage: store}})
	if err != nil {
		return err
	}
	RegisterCart(silo, NewFactory(cfg), grain.WithCollectionAge(collectionAge))
	if err := silo.Start(ctx); err != nil {
		return err
	}
	defer silo.Stop(context.Background())
	say := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	say("A silo is up. Carts expire %v after their last change, checked every %v by a reminder.", cfg.TTL, cfg.ExpiryCheck)

	// 1. Write-behind.
	ada := NewCartRef(silo.Client(), "ada")
	if _, err := ada.AddItem(ctx, "apple", 2); err != nil {
		return err
	}
	v, err := ada.AddItem(ctx, "bread", 1)
	if err != nil {
		return err
	}
	say("ada adds 2 apple and 1 bread: %s.", describe(v))
	st, ok, err := readStored(ctx, store, "ada")
	if err != nil {
		return err
	}
	say("Storage right after the calls returned: %s.", describeStored(st, ok))
	if st, err = waitStored(ctx, store, "ada", func(s cartState) bool { return len(s.Items) == 2 }); err != nil {
		return fmt.Errorf("waiting for write-behind: %w", err)
	}
	say("Within %v, write-behind stored %s, while the cart stayed active (%d activation).",
		cfg.WriteDelay, describeStored(st, true), silo.ActivationCount())

	// 2. The price timer.
	board.set("bread", 250)
	say("The bakery raises bread to %s.", money(250))
	for v.Lines[1].UnitPrice != 250 {
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return fmt.Errorf("waiting for the price timer: %w", err)
		}
		if v, err = ada.View(ctx); err != nil {
			return err
		}
	}
	say("The cart's price timer (every %v, a turn of its own) refreshed it: %s.", cfg.PriceRefresh, describe(v))

	// 3. Deactivation: the timer does not keep the cart alive.
	for silo.ActivationCount() > 0 {
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return fmt.Errorf("waiting for deactivation: %w", err)
		}
	}
	say("Nobody calls ada for %v: the silo deactivates the cart (%d activations); its price timer stops with it.",
		collectionAge, silo.ActivationCount())

	// 4. Expiry by the durable reminder.
	say("Its expire reminder lives in etcd, not in the activation: each tick activates the cart to check it.")
	if st, err = waitStored(ctx, store, "ada", func(s cartState) bool { return !s.ExpiredAt.IsZero() }); err != nil {
		return fmt.Errorf("waiting for the reminder: %w", err)
	}
	say("Without any call, the reminder found ada abandoned and emptied it: storage holds %s.", describeStored(st, true))
	if v, err = ada.View(ctx); err != nil {
		return err
	}
	say("ada views her cart: %s.", describe(v))

	// 5. Checkout.
	bob := NewCartRef(silo.Client(), "bob")
	if _, err := bob.AddItem(ctx, "coffee", 1); err != nil {
		return err
	}
	order, err := bob.Checkout(ctx)
	if err != nil {
		return err
	}
	st, ok, err = readStored(ctx, store, "bob")
	if err != nil {
		return err
	}
	say("bob checks out 1 coffee: order %s, %s. Checkout stored his cart at once (%s) and deleted its reminder.",
		order.ID, money(order.Total), describeStored(st, ok))
	if _, err := bob.Checkout(ctx); errors.Is(err, ErrEmptyCart) {
		say("A second checkout fails with ErrEmptyCart: %v.", err)
	} else {
		return fmt.Errorf("second checkout: got %v, want ErrEmptyCart", err)
	}
	return silo.Stop(ctx)
}

// priceBoard is a price list that changes while the demo runs.
type priceBoard struct {
	mu     sync.Mutex
	prices map[string]int64
}

func (b *priceBoard) price(sku string) (int64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ok := b.prices[sku]
	return p, ok
}

func (b *priceBoard) set(sku string, cents int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.prices[sku] = cents
}

// readStored reads a cart's stored state straight from the storage
// provider, as the runtime stores it.
func readStored(ctx context.Context, p storage.Provider, key string) (cartState, bool, error) {
	data, _, err := p.Read(ctx, storage.Key{GrainType: CartType.Name, GrainKey: key, State: "cart"})
	var s cartState
	if err != nil || data == nil {
		return s, false, err
	}
	return s, true, msgpack.Unmarshal(data, &s)
}

// waitStored polls storage until the stored cart satisfies cond.
func waitStored(ctx context.Context, p storage.Provider, key string, cond func(cartState) bool) (cartState, error) {
	for {
		s, ok, err := readStored(ctx, p, key)
		if err != nil {
			return s, err
		}
		if ok && cond(s) {
			return s, nil
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return s, err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func describe(v CartView) string {
	if len(v.Lines) == 0 {
		if !v.ExpiredAt.IsZero() {
			return "empty (expired)"
		}
		return "empty"
	}
	var b strings.Builder
	for i, l := range v.Lines {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d %s at %s", l.Qty, l.SKU, money(l.UnitPrice))
	}
	fmt.Fprintf(&b, ", total %s", money(v.Total))
	return b.String()
}

func describeStored(s cartState, ok bool) string {
	if !ok {
		return "nothing yet"
	}
	var parts []string
	for _, sku := range slices.Sorted(maps.Keys(s.Items)) {
		parts = append(parts, fmt.Sprintf("%d %s", s.Items[sku], sku))
	}
	if len(parts) == 0 {
		parts = append(parts, "no items")
	}
	if !s.ExpiredAt.IsZero() {
		parts = append(parts, "expired")
	}
	if s.Orders > 0 {
		parts = append(parts, fmt.Sprintf("%d order(s) placed", s.Orders))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func money(cents int64) string { return fmt.Sprintf("$%d.%02d", cents/100, cents%100) }
