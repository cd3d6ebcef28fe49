// Package chat is the observers sample: a chat room grain that pushes
// every message to the frontends of its members, which are clients in
// other processes (here, two clients in this one). See the README's
// Observers section.
package chat

//go:generate go run github.com/granary-rt/granary/codegen/cmd/granary-gen

import "context"

// Screen is a member's frontend: the room calls it back with every
// message. Its methods are one-way.
//
//granary:observer name=chat.Screen
type Screen interface {
	Show(ctx context.Context, from, text string) error
}

// Room is a chat room.
//
//granary:grain name=chat.Room
type Room interface {
	// Join subscribes a member's screen; members join again within
	// MemberExpiry to stay.
	Join(ctx context.Context, member string, s ScreenRef) error
	// Say shows text, from member, on every member's screen and returns
	// how many screens accepted it.
	Say(ctx context.Context, member, text string) (int, error)
	// Members returns the number of screens subscribed.
	Members(ctx context.Context) (int, error) //granary:readonly
}
