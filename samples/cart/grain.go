package cart

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/granary-rt/granary/grain"
)

// expireReminder names the durable reminder that empties an abandoned cart.
const expireReminder = "expire"

// cartState is what a cart persists. Prices are not part of it: they are
// looked up again by every activation.
type cartState struct {
	Items     map[string]int `msgpack:"items"` // SKU → quantity
	UpdatedAt time.Time      `msgpack:"updated_at"`
	ExpiredAt time.Time      `msgpack:"expired_at"`
	Orders    int            `msgpack:"orders"` // orders placed so far
}

type cart struct {
	ctx   grain.Context
	cfg   Config
	state *grain.State[cartState]

	// Activation-only fields, rebuilt by OnActivate. Every method and the
	// price timer run as turns of this activation, one at a time, so they
	// need no lock.
	prices   map[string]int64 // unit price of each SKU in the cart
	pricedAt time.Time
	expiring bool // the expire reminder is registered
}

func newCart(c grain.Context, cfg Config) *cart {
	return &cart{
		ctx: c,
		cfg: cfg,
		// Write-behind: after a call changes the cart, the runtime writes
		// it at most WriteDelay later, in a turn of its own, once for all
		// the calls in between. A shopper clicking "add" ten times costs
		// one storage write, not ten. The price: a silo crash loses at
		// most the last WriteDelay of changes (a graceful stop or an idle
		// deactivation loses nothing).
		state: grain.NewState[cartState](c, "cart", grain.WithWriteBehind(cfg.WriteDelay)),
	}
}

// OnActivate runs after the state was loaded and before the first call.
func (g *cart) OnActivate(ctx context.Context) error {
	g.refreshPrices(ctx)
	// A timer keeps the prices of an active cart fresh, so that View does
	// not look them up on every call. Its callback runs as a turn of this
	// activation: never at the same time as a call or as itself, which is
	// why refreshPrices can replace g.prices without a lock. A timer lives
	// in memory only: it stops when the activation is deactivated and
	// does not keep it alive (a cart nobody looks at needs no fresh
	// prices); the next activation starts a new one here.
	g.ctx.RegisterTimer(g.cfg.PriceRefresh, g.cfg.PriceRefresh, g.refreshPrices)
	// A stored cart with items always has its expire reminder: AddItem
	// registers it before it changes the cart, and it is deleted only
	// once the empty cart is stored (see stopExpiry).
	g.expiring = len(g.state.Value.Items) > 0
	return nil
}

// refreshPrices looks up the price of every SKU in the cart. A SKU that is
// no longer sold keeps its last price; Checkout refuses it.
func (g *cart) refreshPrices(context.Context) {
	prices := make(map[string]int64, len(g.state.Value.Items))
	for sku := range g.state.Value.Items {
		if p, ok := g.cfg.Prices(sku); ok {
			prices[sku] = p
		} else if p, ok := g.prices[sku]; ok {
			prices[sku] = p
		}
	}
	g.prices, g.pricedAt = prices, now()
}

func (g *cart) AddItem(ctx context.Context, sku string, qty int) (CartView, error) {
	if qty <= 0 {
		return CartView{}, fmt.Errorf("add %d of %q: %w", qty, sku, ErrInvalidQuantity)
	}
	price, ok := g.cfg.Prices(sku)
	if !ok {
		return CartView{}, fmt.Errorf("add %q: %w", sku, ErrUnknownSKU)
	}
	// Register the reminder before changing the cart: if it fails, the
	// call fails and the cart is unchanged, so a cart with items never
	// lacks the reminder that will expire it.
	if err := g.startExpiry(ctx); err != nil {
		return CartView{}, err
	}
	s := &g.state.Value
	if s.Items == nil {
		s.Items = make(map[string]int)
	}
	s.Items[sku] += qty
	s.UpdatedAt, s.ExpiredAt = now(), time.Time{}
	g.prices[sku] = price
	return g.view(), nil // stored within WriteDelay by write-behind
}

func (g *cart) RemoveItem(ctx context.Context, sku string, qty int) (CartView, error) {
	if qty <= 0 {
		return CartView{}, fmt.Errorf("remove %d of %q: %w", qty, sku, ErrInvalidQuantity)
	}
	s := &g.state.Value
	have, ok := s.Items[sku]
	if !ok {
		return g.view(), nil
	}
	if qty >= have {
		delete(s.Items, sku)
		delete(g.prices, sku)
	} else {
		s.Items[sku] = have - qty
	}
	s.UpdatedAt = now()
	// An emptied cart keeps its reminder until the next tick, which
	// finds nothing to expire and deletes it.
	return g.view(), nil
}

func (g *cart) View(ctx context.Context) (CartView, error) { return g.view(), nil }

func (g *cart) Checkout(ctx context.Context) (Order, error) {
	s := &g.state.Value
	if len(s.Items) == 0 {
		return Order{}, fmt.Errorf("checkout of cart %s: %w", g.ctx.ID().Key, ErrEmptyCart)
	}
	// Charge current prices, not the ones last refreshed.
	var order Order
	for _, sku := range slices.Sorted(maps.Keys(s.Items)) {
		price, ok := g.cfg.Prices(sku)
		if !ok {
			return Order{}, fmt.Errorf("checkout of cart %s: %q is no longer sold: %w", g.ctx.ID().Key, sku, ErrUnknownSKU)
		}
		order.Lines = append(order.Lines, Line{SKU: sku, Qty: s.Items[sku], UnitPrice: price})
		order.Total += int64(s.Items[sku]) * price
	}
	prev := *s
	s.Orders++
	order.ID = fmt.Sprintf("%s-%d", g.ctx.ID().Key, s.Orders)
	order.PlacedAt = now()
	s.Items, s.UpdatedAt, s.ExpiredAt = nil, order.PlacedAt, time.Time{}
	// An order must not be lost, whatever the write policy: State.Write
	// stores the state now, before the call returns. (A real shop would
	// hand the order to an Order grain or a queue here.)
	if err := g.state.Write(ctx); err != nil {
		*s = prev // not stored: do not report or keep it
		return Order{}, fmt.Errorf("checkout of cart %s: %w", g.ctx.ID().Key, err)
	}
	g.prices = make(map[string]int64)
	if err := g.stopExpiry(ctx); err != nil {
		// The order is placed. The reminder's next tick finds the cart
		// empty and deletes itself.
		g.ctx.Logger().Warn("cart: deleting the expire reminder after checkout failed", zap.Error(err))
	}
	return order, nil
}

// ReceiveReminder implements grain.Remindable. The runtime calls it, as a
// turn, at every tick of one of the cart's reminders, activating the cart
// first if it is not active: a cart abandoned days ago was long
// deactivated, and its reminder still empties it.
//
// Reminders fire at least once: around a silo crash a tick can fire twice,
// and ticks missed while no silo could fire them (a crash, the cluster
// down) are folded into one late tick with tick.Missed > 0. The check is
// written for that: it compares times rather than counting ticks, and doing
// it twice does no harm.
func (g *cart) ReceiveReminder(ctx context.Context, tick grain.Tick) error {
	if tick.Name != expireReminder {
		return fmt.Errorf("cart: unexpected reminder %q", tick.Name)
	}
	if tick.Missed > 0 {
		g.ctx.Logger().Info("cart: expiry check ran late", zap.Int("missed_ticks", tick.Missed), zap.Time("due", tick.Due))
	}
	s := &g.state.Value
	if len(s.Items) > 0 && now().Sub(s.UpdatedAt) < g.cfg.TTL {
		return nil // still in use; check again at the next tick
	}
	if len(s.Items) > 0 {
		s.Items, s.ExpiredAt = nil, now()
		g.prices = make(map[string]int64)
		g.ctx.Logger().Info("cart: abandoned cart expired", zap.Time("updated_at", s.UpdatedAt))
	}
	return g.stopExpiry(ctx)
}

// startExpiry registers the expire reminder unless it is registered. Its
// first tick is one ExpiryCheck from now, then one every ExpiryCheck.
// Registering again is harmless (it replaces the schedule) but costs a
// write to the reminder table, so it is done once, not on every change:
// each tick checks how long the cart has been left alone.
func (g *cart) startExpiry(ctx context.Context) error {
	if g.expiring {
		return nil
	}
	if err := g.ctx.RegisterReminder(ctx, expireReminder, g.cfg.ExpiryCheck, g.cfg.ExpiryCheck); err != nil {
		return fmt.Errorf("cart %s: %w", g.ctx.ID().Key, err)
	}
	g.expiring = true
	return nil
}

// stopExpiry stores the empty cart, then deletes its expire reminder. In
// that order: if the reminder went first and the silo crashed before the
// write-behind flush, the stored cart would keep its items with nothing
// left to expire them.
func (g *cart) stopExpiry(ctx context.Context) error {
	if _, err := g.state.WriteIfChanged(ctx); err != nil {
		return fmt.Errorf("cart %s: %w", g.ctx.ID().Key, err)
	}
	err := g.ctx.UnregisterReminder(ctx, expireReminder)
	if err != nil && !errors.Is(err, grain.ErrNotFound) { // already gone: a tick that fired twice
		return fmt.Errorf("cart %s: %w", g.ctx.ID().Key, err)
	}
	g.expiring = false
	return nil
}

func (g *cart) view() CartView {
	s := &g.state.Value
	v := CartView{PricedAt: g.pricedAt, UpdatedAt: s.UpdatedAt, ExpiredAt: s.ExpiredAt}
	for _, sku := range slices.Sorted(maps.Keys(s.Items)) {
		l := Line{SKU: sku, Qty: s.Items[sku], UnitPrice: g.prices[sku]}
		v.Lines = append(v.Lines, l)
		v.Total += int64(l.Qty) * l.UnitPrice
	}
	if len(s.Items) > 0 {
		v.ExpiresAt = s.UpdatedAt.Add(g.cfg.TTL)
	}
	return v
}

// now is the wall clock in UTC: times are stored, and compared across
// activations and silos.
func now() time.Time { return time.Now().UTC() }
