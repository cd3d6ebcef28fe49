package bank

import "context"

// Ledger sums accounts by calling them: a grain calling other grains.
//
//granary:grain
type Ledger interface {
	Total(ctx context.Context, accounts []string) (Money, error)
}
