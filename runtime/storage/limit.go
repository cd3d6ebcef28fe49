package storage

// Limiter is an optional capability of a Provider whose backend bounds the
// size of a stored value. Find it by type assertion:
//
//	if l, ok := p.(storage.Limiter); ok && l.MaxValueBytes() > 0 { ... }
//
// A Write whose data is longer than MaxValueBytes fails with an error that
// wraps ErrTooLarge and states the size and the limit; nothing is written.
type Limiter interface {
	// MaxValueBytes returns the largest value, in bytes, that Write
	// accepts. Zero or less means the provider, as configured, has no
	// limit.
	MaxValueBytes() int
}
