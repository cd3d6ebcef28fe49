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

// Room pushes to its subscribers. Its methods take the generated
// reference, which exists while generating too.
//
//granary:grain
type Room interface {
	Subscribe(ctx context.Context, o ChatObserverRef) error
	Members(ctx context.Context) ([]ChatObserverRef, error)
	Raw(ctx context.Context, o grain.ObserverRef) error
}
