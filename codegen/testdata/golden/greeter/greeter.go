// Package hello is the example of the generator's documentation.
package hello

import "context"

//granary:grain
type Greeter interface {
	Greet(ctx context.Context, name string) (string, error)
	Count(ctx context.Context) (int64, error) //granary:readonly
	Tags(ctx context.Context, tags []string, n int) (map[string]int, error)
	Notify(ctx context.Context, msg string) error //granary:oneway
}
