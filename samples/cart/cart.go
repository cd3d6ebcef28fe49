package cart

//go:generate go run github.com/granary-rt/granary/codegen/cmd/granary-gen

import (
	"context"
	"time"

	"github.com/granary-rt/granary/grain"
)

// Domain errors. They reach the caller and match errors.Is, also across
// processes, because they are defined with grain.NewError.
var (
	ErrInvalidQuantity = grain.NewError("cart.invalid_quantity", "cart: quantity must be positive")
	ErrUnknownSKU      = grain.NewError("cart.unknown_sku", "cart: unknown SKU")
	ErrEmptyCart       = grain.NewError("cart.empty", "cart: the cart is empty")
)

// Cart is one shopper's shopping cart, keyed by the shopper's id.
//
//granary:grain name=cart.Cart
type Cart interface {
	// AddItem adds qty (> 0) of sku and returns the cart. It restarts the
	// cart's time to live.
	AddItem(ctx context.Context, sku string, qty int) (CartView, error)
	// RemoveItem removes up to qty (> 0) of sku and returns the cart.
	RemoveItem(ctx context.Context, sku string, qty int) (CartView, error)
	// View returns the cart, priced at the prices last refreshed.
	View(ctx context.Context) (CartView, error) //granary:readonly
	// Checkout turns the cart into an order at current prices and empties
	// it, or fails with ErrEmptyCart.
	Checkout(ctx context.Context) (Order, error)
}

// CartView is what a shopper sees of a cart.
type CartView struct {
	// Lines, sorted by SKU.
	Lines []Line `msgpack:"lines"`
	// Total is the sum of the lines, in cents.
	Total int64 `msgpack:"total"`
	// PricedAt is when the prices were last refreshed.
	PricedAt time.Time `msgpack:"priced_at"`
	// UpdatedAt is the last change; zero for a cart never changed.
	UpdatedAt time.Time `msgpack:"updated_at"`
	// ExpiresAt is when a cart left alone becomes abandoned (UpdatedAt +
	// TTL); zero for an empty cart. The expire reminder empties it at its
	// first tick after that.
	ExpiresAt time.Time `msgpack:"expires_at"`
	// ExpiredAt is set when the expire reminder emptied an abandoned cart,
	// and cleared by the next AddItem.
	ExpiredAt time.Time `msgpack:"expired_at"`
}

// Line is one SKU in a cart or an order.
type Line struct {
	SKU       string `msgpack:"sku"`
	Qty       int    `msgpack:"qty"`
	UnitPrice int64  `msgpack:"unit_price"` // cents
}

// Order is the result of a checkout.
type Order struct {
	// ID is "<cart key>-<n>" for the cart's n-th order.
	ID       string    `msgpack:"id"`
	Lines    []Line    `msgpack:"lines"`
	Total    int64     `msgpack:"total"`
	PlacedAt time.Time `msgpack:"placed_at"`
}
