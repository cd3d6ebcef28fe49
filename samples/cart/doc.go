// Package cart is a Granary sample: shopping carts that expire. It shows the
// three ways a grain deals with durable state and time, and what each one
// guarantees:
//
//   - a persistent state written behind the calls,
//   - a timer, for periodic work while the grain is active,
//   - a durable reminder, for work that must happen whether or not the grain
//     is active.
//
// A Cart is keyed by the shopper's id. AddItem and RemoveItem change it,
// View shows it with prices, Checkout turns it into an Order and empties it.
// A cart nobody changes for its TTL is abandoned: it is emptied, and View
// reports when (CartView.ExpiredAt).
//
//	silo, err := runtime.NewSilo(runtime.Config{})
//	...
//	cart.RegisterCart(silo, cart.NewFactory(cart.Config{TTL: 30 * time.Minute}))
//	...
//	c := cart.NewCartRef(silo.Client(), "ada")
//	view, err := c.AddItem(ctx, "apple", 2)
//
// # Write-behind state
//
// The cart declares its state with
//
//	grain.NewState[cartState](c, "cart", grain.WithWriteBehind(cfg.WriteDelay))
//
// After a call that changed the cart returns, the runtime writes the state
// at most WriteDelay later, in a turn of its own, once for all the calls in
// between: ten quick clicks cost one storage write. Changes are also written
// when the cart is deactivated or the silo stops gracefully. The limit: if
// the silo crashes, the changes of at most the last WriteDelay are lost.
// That is the right trade for a cart, not for an order, so Checkout calls
// State.Write, which stores the state before the call returns whatever the
// policy.
//
// # Timer
//
// OnActivate registers a timer (grain.Context.RegisterTimer) that refreshes
// the prices of the items in the cart every PriceRefresh, so that View does
// not look them up on every call (Checkout still charges current prices).
// The callback runs as a turn of the activation: never at the same time as
// a call or as itself, so it changes the grain's fields without a lock. A
// timer lives in memory: it is stopped when the activation is deactivated,
// and its ticks do not count as activity, so it does not keep the cart
// alive (grain.KeepAlive would). Each activation registers its own.
// Use timers for work that only matters while the grain is active, and that
// may be skipped when it is not.
//
// # Reminder
//
// The first AddItem registers the cart's "expire" reminder
// (grain.Context.RegisterReminder) with a period of ExpiryCheck. Reminders
// are stored in the cluster's reminder table (etcd by default), not in the
// activation: at every tick the runtime calls the cart's ReceiveReminder
// method (grain.Remindable), activating the cart first if it was
// deactivated, on whichever silo, even after the whole cluster restarted.
// The tick checks how long the cart has been left alone; past the TTL it
// empties it. So an abandoned cart is emptied between TTL and
// TTL+ExpiryCheck after its last change. Registering once and checking at
// each tick costs one reminder-table write per activation that adds items,
// not one per change.
//
// Reminders fire at least once, not exactly once: around a silo crash a
// tick may fire twice, and the ticks due while no silo could fire them are
// folded into one tick that fires late, with grain.Tick.Missed > 0. The
// check is written for that: it compares times, not tick counts, and
// running it twice does no harm. Reminder periods are coarse: at least
// runtime.Config.ReminderMinPeriod, 1s by default (tests lower it).
//
// Checkout and expiry delete the reminder (grain.Context.UnregisterReminder),
// but only after the empty cart is stored: deleting it first and crashing
// before the write would leave a stored cart with items and nothing to
// expire it. An emptied cart keeps its reminder until the next tick, which
// finds nothing to do and deletes it.
//
// # Running it
//
// cmd/cart runs Run: one silo on an embedded etcd, a cart stored behind its
// calls, refreshed by its timer, deactivated, then expired by its reminder
// without any call, and a second cart checked out. The tests run the demo
// and check each guarantee on a real silo, in a few seconds.
package cart
