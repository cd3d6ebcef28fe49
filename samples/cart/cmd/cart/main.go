// Command cart runs the cart sample: one silo on an embedded etcd, a cart
// stored with write-behind, refreshed by a timer and expired by a durable
// reminder.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/granary-rt/granary/samples/cart"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := cart.Run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "cart:", err)
		os.Exit(1)
	}
}
