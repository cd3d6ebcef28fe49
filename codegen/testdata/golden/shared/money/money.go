// Package money is a dependency of the golden test packages: a package of
// the module that declares wire types but no grains.
package money

// Amount is a sum in cents.
type Amount int64

// Price is a value type: copy-free.
type Price struct {
	Amount   Amount
	Currency string
}

// Basket holds a slice: not copy-free.
type Basket struct {
	Items []Price
	Note  string
	cache map[string]int `msgpack:"-"` // unexported, and left out on purpose
}
