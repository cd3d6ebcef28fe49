package bank

import "context"

// Ledger and Teller are declared in one file: one output for both.
//
//granary:grain
type Ledger interface {
	Append(ctx context.Context, e Entry) (int, error)
	Entries(ctx context.Context, from, to int) ([]Entry, error) //granary:readonly
}

type (
	// Teller is in a grouped declaration.
	//granary:grain name=bank.Teller.v2
	Teller interface {
		Serve(context.Context, string, *Entry) (bool, error)
	}
)
