// Package lobby has an observer interface next to the grain that calls it.
package lobby

import (
	"context"

	"github.com/granary-rt/granary/grain"
)

// ChatObserver receives a room's messages.
//
//granary:observer
type ChatObserver interface {
	Receive(ctx context.Context, from, text string) error
	Closed(context.Context) error                //granary:oneway
	Seen(ctx context.Context, ids []int64) error //granary:method name=SeenV2
}

// Room pushes to its subscribers.
//
//granary:grain
type Room interface {
	Subscribe(ctx context.Context, o grain.ObserverRef) error
	Post(ctx context.Context, text string) (int, error)
}
