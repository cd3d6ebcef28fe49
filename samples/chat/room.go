package chat

import (
	"context"
	"time"

	"github.com/granary-rt/granary/grain"
)

// MemberExpiry is how long a room keeps a screen that does not join
// again.
const MemberExpiry = 5 * time.Minute

type room struct {
	c       grain.Context
	screens *grain.ObserverSet[ScreenRef]
}

// NewRoom builds a Room for an activation. Its screens live in memory: a
// room that was deactivated starts empty, and members join again.
func NewRoom(c grain.Context) Room {
	return &room{c: c, screens: grain.NewObserverSet[ScreenRef](MemberExpiry, 0)}
}

func (r *room) Join(ctx context.Context, member string, s ScreenRef) error {
	return r.screens.Subscribe(s)
}

func (r *room) Say(ctx context.Context, member, text string) (int, error) {
	// A screen whose client went away fails with grain.ErrObserverGone
	// and is dropped; other failures are returned (the screens stay until
	// they expire).
	return r.screens.Notify(ctx, func(ctx context.Context, s ScreenRef) error {
		return s.Bind(r.c).Show(ctx, member, text)
	})
}

func (r *room) Members(ctx context.Context) (int, error) { return r.screens.Len(), nil }
