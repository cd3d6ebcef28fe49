package cart_test

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/reminder"
	"github.com/granary-rt/granary/runtime/runtimetest"
	"github.com/granary-rt/granary/runtime/storage"
	"github.com/granary-rt/granary/samples/cart"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRun runs the demo of cmd/cart.
func TestRun(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := cart.Run(ctx, &out); err != nil {
		t.Fatalf("%v\noutput so far:\n%s", err, out.String())
	}
	for _, want := range []string{
		"ada adds 2 apple and 1 bread: 2 apple at $0.50, 1 bread at $2.25, total $3.25.",
		"Storage right after the calls returned: nothing yet.",
		"write-behind stored {2 apple, 1 bread}, while the cart stayed active (1 activation).",
		"refreshed it: 2 apple at $0.50, 1 bread at $2.50, total $3.50.",
		"the silo deactivates the cart (0 activations)",
		"Without any call, the reminder found ada abandoned and emptied it: storage holds {no items, expired}.",
		"ada views her cart: empty (expired).",
		"order bob-1, $8.99. Checkout stored his cart at once ({no items, 1 order(s) placed})",
		"A second checkout fails with ErrEmptyCart",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out.String())
	}
}

// env is a one-silo cluster on an embedded etcd whose storage and
// reminder table the test can look into.
type env struct {
	*runtimetest.Cluster
	store     *countingStore
	reminders reminder.Table
}

func newEnv(t *testing.T, rc runtime.Config, cc cart.Config, opts ...grain.TypeOption) *env {
	t.Helper()
	e := &env{store: &countingStore{Memory: storage.NewMemory()}}
	rc.Storage = map[string]storage.Provider{runtime.DefaultStorage: e.store}
	e.Cluster = runtimetest.NewCluster(t, 1, runtimetest.Options{
		Config:   rc,
		Register: func(s *runtime.Silo) { cart.RegisterCart(s, cart.NewFactory(cc), opts...) },
	})
	// The silo keeps reminders in etcd; open the same table to look.
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	if e.reminders, err = reminder.NewEtcd(cli, reminder.EtcdConfig{Prefix: runtime.ClusterPrefix(e.Name)}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) stored(t *testing.T, key string) (cart.StoredCart, bool) {
	t.Helper()
	s, ok, err := cart.ReadStored(context.Background(), e.store, key)
	if err != nil {
		t.Fatal(err)
	}
	return s, ok
}

func (e *env) remindersOf(t *testing.T, key string) []reminder.Entry {
	t.Helper()
	rs, err := e.reminders.ListGrain(context.Background(), grain.ID{Type: cart.CartType.Name, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// countingStore counts state writes.
type countingStore struct {
	*storage.Memory
	writes atomic.Int64
}

func (s *countingStore) Write(ctx context.Context, k storage.Key, data []byte, etag string) (string, error) {
	s.writes.Add(1)
	return s.Memory.Write(ctx, k, data, etag)
}

// prices is a price list the test changes while carts run. It counts
// lookups.
type prices struct {
	mu      sync.Mutex
	m       map[string]int64
	lookups atomic.Int64
}

func newPrices() *prices {
	return &prices{m: map[string]int64{"apple": 50, "bread": 225, "coffee": 899}}
}

func (p *prices) price(sku string) (int64, bool) {
	p.lookups.Add(1)
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.m[sku]
	return c, ok
}

func (p *prices) set(sku string, cents int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m[sku] = cents
}

func items(v cart.CartView) map[string]int {
	m := make(map[string]int)
	for _, l := range v.Lines {
		m[l.SKU] = l.Qty
	}
	return m
}

// TestWriteBehindStoresWhileActive: the calls' changes are stored within
// the write-behind delay, in one write, while the cart stays active (so
// it is not a deactivation that wrote them).
func TestWriteBehindStoresWhileActive(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const delay = 500 * time.Millisecond
	e := newEnv(t, runtime.Config{CollectionAge: time.Minute}, cart.Config{WriteDelay: delay})
	c := cart.NewCartRef(e.Client(), "ada")
	start := time.Now()
	for _, add := range []struct {
		sku string
		qty int
	}{{"apple", 2}, {"bread", 1}, {"coffee", 1}, {"apple", 1}} {
		if _, err := c.AddItem(ctx, add.sku, add.qty); err != nil {
			t.Fatal(err)
		}
	}
	v, err := c.RemoveItem(ctx, "coffee", 5)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"apple": 3, "bread": 1}
	if got := items(v); !maps.Equal(got, want) || v.Total != 3*50+225 {
		t.Fatalf("view = %+v, want items %v, total 375", v, want)
	}
	if _, ok := e.stored(t, "ada"); ok && time.Since(start) < delay {
		t.Fatalf("the cart was stored before the write-behind delay")
	}
	runtimetest.Eventually(t, 5*time.Second, func() bool {
		s, ok := e.stored(t, "ada")
		return ok && maps.Equal(s.Items, want)
	}, "write-behind did not store the cart")
	stored := time.Since(start)
	if n := e.Silos[0].ActivationCount(); n != 1 {
		t.Fatalf("%d activations after the write-behind flush, want 1 (still active)", n)
	}
	if n := e.store.writes.Load(); n != 1 {
		t.Errorf("%d state writes for 5 calls, want 1 (write-behind batches them)", n)
	}
	if stored > delay+time.Second {
		t.Errorf("stored %v after the first change; the write-behind delay is %v", stored, delay)
	}
	// Only the reminder was registered, once (AddItem registers it when
	// the cart gets its first item).
	if rs := e.remindersOf(t, "ada"); len(rs) != 1 || rs[0].Name != cart.ExpireReminder {
		t.Fatalf("reminders = %+v, want one %q", rs, cart.ExpireReminder)
	}
}

// TestPriceTimer: the timer refreshes prices while the cart is active, its
// callback never overlaps a call (the race detector watches the grain's
// unlocked price map while calls hammer it), and it neither keeps the cart
// alive nor outlives the activation.
func TestPriceTimer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := newPrices()
	const collectionAge = 300 * time.Millisecond
	e := newEnv(t, runtime.Config{}, cart.Config{PriceRefresh: 20 * time.Millisecond, Prices: p.price},
		grain.WithCollectionAge(collectionAge))
	c := cart.NewCartRef(e.Client(), "bea")
	if v, err := c.AddItem(ctx, "bread", 2); err != nil || v.Total != 450 {
		t.Fatalf("AddItem = %+v, %v; want total 450", v, err)
	}
	p.set("bread", 250)

	// Calls and timer callbacks on one activation for a while.
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); {
				var err error
				if i == 0 {
					_, err = c.AddItem(ctx, "apple", 1)
				} else {
					_, err = c.View(ctx)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	runtimetest.Eventually(t, 5*time.Second, func() bool {
		v, err := c.View(ctx)
		return err == nil && v.Total == 2*250+int64(items(v)["apple"])*50
	}, "the timer did not refresh the price of bread")

	// No more calls: the timer keeps firing but does not count as
	// activity, so the cart is deactivated after its collection age.
	idle := time.Now()
	runtimetest.Eventually(t, 10*collectionAge, func() bool { return e.Silos[0].ActivationCount() == 0 },
		"the price timer kept the cart alive")
	t.Logf("deactivated %v after the last call (collection age %v)", time.Since(idle).Round(time.Millisecond), collectionAge)
	// The timer died with the activation: no more price lookups.
	n := p.lookups.Load()
	time.Sleep(5 * 20 * time.Millisecond)
	if m := p.lookups.Load(); m != n {
		t.Fatalf("%d price lookups after deactivation: the timer outlived its activation", m-n)
	}
}

// TestAbandonedCartExpires: a cart left alone is emptied by its reminder
// while it is deactivated, and the reminder is deleted; a cart in use is
// not expired.
func TestAbandonedCartExpires(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The first tick comes after the TTL, and long after the cart was
	// deactivated.
	const (
		ttl           = 500 * time.Millisecond
		check         = 700 * time.Millisecond
		collectionAge = 150 * time.Millisecond
	)
	e := newEnv(t,
		runtime.Config{ReminderMinPeriod: 100 * time.Millisecond}, // 1s in production
		cart.Config{TTL: ttl, ExpiryCheck: check, WriteDelay: 50 * time.Millisecond},
		grain.WithCollectionAge(collectionAge))
	ada := cart.NewCartRef(e.Client(), "ada")
	bob := cart.NewCartRef(e.Client(), "bob")
	if _, err := ada.AddItem(ctx, "apple", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.AddItem(ctx, "coffee", 1); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"ada", "bob"} {
		if rs := e.remindersOf(t, key); len(rs) != 1 || rs[0].Period != check {
			t.Fatalf("reminders of %s = %+v, want one with period %v", key, rs, check)
		}
	}
	// Both carts go idle and are deactivated; nothing calls ada again.
	runtimetest.Eventually(t, 5*time.Second, func() bool { return e.Silos[0].ActivationCount() == 0 },
		"the carts were not deactivated")
	if s, ok := e.stored(t, "ada"); !ok || len(s.Items) != 1 || !s.ExpiredAt.IsZero() {
		t.Fatalf("ada's stored cart at deactivation = %+v (exists %v), want 2 apple, not expired", s, ok)
	}
	// bob keeps shopping; every tick finds his cart in use.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(ttl / 4)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := bob.AddItem(ctx, "apple", 1); err != nil {
					t.Error(err)
					return
				}
			}
		}
	})
	defer wg.Wait()
	defer close(stop)

	// Only ada's reminder can activate and change her cart now.
	runtimetest.Eventually(t, 10*check, func() bool {
		s, ok := e.stored(t, "ada")
		return ok && !s.ExpiredAt.IsZero()
	}, "the reminder did not expire ada's abandoned cart")
	s, _ := e.stored(t, "ada")
	if len(s.Items) != 0 {
		t.Fatalf("expired cart still stores %v", s.Items)
	}
	if idle := s.ExpiredAt.Sub(s.UpdatedAt); idle < ttl || idle > ttl+check+time.Second {
		t.Errorf("expired %v after the last change; want between the TTL %v and TTL+check %v (plus slack)", idle, ttl, ttl+check)
	}
	runtimetest.Eventually(t, 5*time.Second, func() bool { return len(e.remindersOf(t, "ada")) == 0 },
		"the expire reminder of the expired cart was not deleted")
	v, err := ada.View(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Lines) != 0 || v.ExpiredAt.IsZero() || !v.ExpiresAt.IsZero() {
		t.Fatalf("ada's view after expiry = %+v, want empty and expired", v)
	}
	if v, err := bob.View(ctx); err != nil || len(v.Lines) == 0 || !v.ExpiredAt.IsZero() {
		t.Fatalf("bob's cart, in use, = %+v, %v; want it not expired", v, err)
	}
	if rs := e.remindersOf(t, "bob"); len(rs) != 1 {
		t.Fatalf("bob's reminders = %+v, want his expire reminder", rs)
	}
	// Shopping again restarts the cart, and its reminder.
	if v, err := ada.AddItem(ctx, "bread", 1); err != nil || !v.ExpiredAt.IsZero() || len(v.Lines) != 1 {
		t.Fatalf("AddItem after expiry = %+v, %v", v, err)
	}
	if rs := e.remindersOf(t, "ada"); len(rs) != 1 {
		t.Fatalf("reminders after a new AddItem = %+v, want the expire reminder again", rs)
	}
}

// TestMissedTicksFireLate: reminders are durable. With every silo of the
// cluster stopped for several periods, the ticks due meanwhile are not
// lost: when a silo is back, they fire once, late, with Tick.Missed
// counting the ones folded in, and the abandoned cart expires.
func TestMissedTicksFireLate(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The first check comes a second after the cart is filled: time
	// enough, even on a loaded machine, to stop the silo before it.
	const (
		ttl   = 300 * time.Millisecond
		check = time.Second
	)
	logs, observed := observer.New(zap.InfoLevel)
	e := newEnv(t,
		runtime.Config{ReminderMinPeriod: 100 * time.Millisecond, Logger: zap.New(logs)},
		cart.Config{TTL: ttl, ExpiryCheck: check})
	ada := cart.NewCartRef(e.Client(), "ada")
	if _, err := ada.AddItem(ctx, "apple", 2); err != nil {
		t.Fatal(err)
	}
	// The whole cluster goes down before the first tick (a graceful stop
	// stores the cart), and stays down for several periods.
	if err := e.Silos[0].Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if s, ok := e.stored(t, "ada"); !ok || len(s.Items) != 1 || !s.ExpiredAt.IsZero() {
		t.Fatalf("stored at shutdown = %+v (exists %v), want 2 apple, not expired", s, ok)
	}
	time.Sleep(4 * check)
	e.AddSilo()
	runtimetest.Eventually(t, 10*check, func() bool {
		s, ok := e.stored(t, "ada")
		return ok && !s.ExpiredAt.IsZero() && len(s.Items) == 0
	}, "ada's cart did not expire after the restart")
	runtimetest.Eventually(t, 5*time.Second, func() bool { return len(e.remindersOf(t, "ada")) == 0 },
		"the expire reminder was not deleted")
	late := observed.FilterMessage("cart: expiry check ran late").All()
	if len(late) != 1 {
		t.Fatalf("%d late ticks logged, want 1", len(late))
	}
	if missed := late[0].ContextMap()["missed_ticks"].(int64); missed < 2 {
		t.Errorf("the late tick folded %d missed ticks; the cluster was down for about %d periods", missed, 4)
	}
}

// TestExpiryCheckBelowMinimumPeriod: with the production minimum reminder
// period (1s), a shorter ExpiryCheck makes AddItem fail, and the cart is
// unchanged.
func TestExpiryCheckBelowMinimumPeriod(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := newEnv(t, runtime.Config{}, cart.Config{ExpiryCheck: 500 * time.Millisecond})
	c := cart.NewCartRef(e.Client(), "dee")
	if _, err := c.AddItem(ctx, "apple", 1); !errors.Is(err, grain.ErrBadRequest) {
		t.Fatalf("AddItem with a 500ms reminder period: err = %v, want grain.ErrBadRequest", err)
	}
	if v, err := c.View(ctx); err != nil || len(v.Lines) != 0 {
		t.Fatalf("view after the failed AddItem = %+v, %v; want an empty cart", v, err)
	}
}

// TestCheckout: checkout charges current prices, stores the emptied cart
// before it returns (not write-behind) and deletes the reminder; domain
// errors reach the caller.
func TestCheckout(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := newPrices()
	e := newEnv(t, runtime.Config{}, cart.Config{WriteDelay: time.Hour, Prices: p.price})
	c := cart.NewCartRef(e.Client(), "cy")
	if _, err := c.AddItem(ctx, "caviar", 1); !errors.Is(err, cart.ErrUnknownSKU) {
		t.Fatalf("unknown SKU: err = %v, want ErrUnknownSKU", err)
	}
	if _, err := c.AddItem(ctx, "apple", 0); !errors.Is(err, cart.ErrInvalidQuantity) {
		t.Fatalf("quantity 0: err = %v, want ErrInvalidQuantity", err)
	}
	if _, err := c.Checkout(ctx); !errors.Is(err, cart.ErrEmptyCart) {
		t.Fatalf("empty checkout: err = %v, want ErrEmptyCart", err)
	}
	if _, err := c.AddItem(ctx, "coffee", 2); err != nil {
		t.Fatal(err)
	}
	p.set("coffee", 950) // the refresh timer (1 minute) has not seen it
	order, err := c.Checkout(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if order.ID != "cy-1" || order.Total != 1900 || len(order.Lines) != 1 || order.Lines[0].UnitPrice != 950 {
		t.Fatalf("order = %+v, want cy-1: 2 coffee at 950", order)
	}
	// Stored now, although the write-behind delay is an hour.
	if s, ok := e.stored(t, "cy"); !ok || len(s.Items) != 0 || s.Orders != 1 {
		t.Fatalf("stored after checkout = %+v (exists %v), want empty with 1 order", s, ok)
	}
	if rs := e.remindersOf(t, "cy"); len(rs) != 0 {
		t.Fatalf("reminders after checkout = %+v, want none", rs)
	}
	if _, err := c.Checkout(ctx); !errors.Is(err, cart.ErrEmptyCart) {
		t.Fatalf("second checkout: err = %v, want ErrEmptyCart", err)
	}
}
