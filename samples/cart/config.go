package cart

import (
	"time"

	"github.com/granary-rt/granary/grain"
)

// Config configures the carts of a silo. The zero value is a production
// setting: carts expire after 30 minutes without a change.
type Config struct {
	// TTL is how long a cart may stay unchanged before it counts as
	// abandoned and is emptied. Default 30 minutes.
	TTL time.Duration
	// ExpiryCheck is the period of the cart's "expire" reminder: an
	// abandoned cart is emptied at the first check after its TTL, so
	// between TTL and TTL+ExpiryCheck after its last change. Reminder
	// periods below the silo's runtime.Config.ReminderMinPeriod (1s by
	// default) are refused. Default TTL/4, at least 1s.
	ExpiryCheck time.Duration
	// WriteDelay is the write-behind delay of the cart's state: a change
	// is stored at most this long after the call that made it. Default 2s.
	WriteDelay time.Duration
	// PriceRefresh is the period of the timer that refreshes the prices
	// of an active cart. Default 1 minute.
	PriceRefresh time.Duration
	// Prices looks up the current unit price of a SKU, in cents. Default
	// ListPrice. It is called from the cart's turns, so it must be safe
	// for concurrent use by many carts.
	Prices func(sku string) (cents int64, ok bool)
}

func (c Config) withDefaults() Config {
	if c.TTL <= 0 {
		c.TTL = 30 * time.Minute
	}
	if c.ExpiryCheck <= 0 {
		c.ExpiryCheck = max(c.TTL/4, time.Second)
	}
	if c.WriteDelay <= 0 {
		c.WriteDelay = 2 * time.Second
	}
	if c.PriceRefresh <= 0 {
		c.PriceRefresh = time.Minute
	}
	if c.Prices == nil {
		c.Prices = ListPrice
	}
	return c
}

// NewFactory returns the Cart factory to register with a silo:
//
//	cart.RegisterCart(silo, cart.NewFactory(cart.Config{TTL: time.Hour}))
func NewFactory(cfg Config) func(grain.Context) Cart {
	cfg = cfg.withDefaults()
	return func(c grain.Context) Cart { return newCart(c, cfg) }
}

var listPrices = map[string]int64{
	"apple":  50,
	"bread":  225,
	"coffee": 899,
	"milk":   119,
}

// ListPrice is the sample's fixed price list: apple, bread, coffee, milk.
func ListPrice(sku string) (cents int64, ok bool) {
	cents, ok = listPrices[sku]
	return cents, ok
}
