// Package hello is the smallest Granary sample: a greeter grain that counts,
// in persistent state, how many greetings it has given.
package hello

//go:generate go run github.com/granary-rt/granary/codegen/cmd/granary-gen

import "context"

// Greeter greets people and remembers how often it did.
//
//granary:grain name=hello.Greeter
type Greeter interface {
	// Greet returns a greeting for name.
	Greet(ctx context.Context, name string) (string, error)
	// Count returns how many greetings this greeter has given, ever.
	Count(ctx context.Context) (int64, error) //granary:readonly
}
