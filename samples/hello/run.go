package hello

import (
	"context"
	"fmt"
	"io"

	"github.com/granary-rt/granary/runtime"
)

// Run starts a silo on an embedded etcd, greets a few people, and stops
// the silo; it writes what happened to w. cmd/hello calls it.
func Run(ctx context.Context, w io.Writer) error {
	silo, err := runtime.NewSilo(runtime.Config{})
	if err != nil {
		return err
	}
	RegisterGreeter(silo, NewGreeter)
	if err := silo.Start(ctx); err != nil {
		return err
	}
	defer silo.Stop(context.Background())

	g := NewGreeterRef(silo.Client(), "lobby")
	for _, name := range []string{"Ada", "Grace", "Barbara"} {
		msg, err := g.Greet(ctx, name)
		if err != nil {
			return fmt.Errorf("greet %s: %w", name, err)
		}
		fmt.Fprintln(w, msg)
	}
	n, err := g.Count(ctx)
	if err != nil {
		return fmt.Errorf("count: %w", err)
	}
	fmt.Fprintf(w, "greeter %q has given %d greetings\n", g.ID().Key, n)
	return silo.Stop(ctx)
}
