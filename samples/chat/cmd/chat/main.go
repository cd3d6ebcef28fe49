// Command chat runs the observers sample: one silo on an embedded etcd, a
// chat room grain, and two clients whose screens the room calls back.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/granary-rt/granary/samples/chat"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := chat.Run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "chat:", err)
		os.Exit(1)
	}
}
