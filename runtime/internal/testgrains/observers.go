package testgrains

import "context"

// Listener is an observer interface: a client's (or a silo's) object that
// a Room calls back.
//
//granary:observer name=test.Listener
type Listener interface {
	// Heard delivers the room's seq-th message.
	Heard(ctx context.Context, seq int64, text string) error
}

// Room is a grain that keeps Listeners in a grain.ObserverSet and
// notifies them of every post.
//
//granary:grain name=test.Room
type Room interface {
	// Join subscribes l (again: that renews its expiry).
	Join(ctx context.Context, l ListenerRef) error
	// Post notifies the subscribers of text.
	Post(ctx context.Context, text string) (PostResult, error)
	// Where returns the id of the silo hosting the room.
	Where(ctx context.Context) (string, error) //granary:readonly
	// ListenHere makes a Listener on the room's own silo, whose calls
	// record into the process-wide HeardLog under key, subscribes it and
	// returns its reference.
	ListenHere(ctx context.Context, key string) (ListenerRef, error)
}

// PostResult is what a Post did.
type PostResult struct {
	Seq         int64
	Delivered   int
	Subscribers int // after the post: gone ones removed
	Err         string
}
