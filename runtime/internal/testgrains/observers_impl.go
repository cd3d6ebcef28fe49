package testgrains

import (
	"context"
	"sync"
	"time"

	"github.com/granary-rt/granary/grain"
)

// RoomExpiry is how long a Room keeps a subscriber that does not join
// again.
const RoomExpiry = time.Minute

type room struct {
	c    grain.Context
	subs *grain.ObserverSet[ListenerRef]
	seq  int64
	mine []grain.ObserverHandle
}

// NewRoom returns the factory of Room grains.
func NewRoom() func(grain.Context) Room {
	return func(c grain.Context) Room {
		return &room{c: c, subs: grain.NewObserverSet[ListenerRef](RoomExpiry, 100)}
	}
}

func (r *room) Join(ctx context.Context, l ListenerRef) error { return r.subs.Subscribe(l) }

func (r *room) Post(ctx context.Context, text string) (PostResult, error) {
	r.seq++
	n, err := r.subs.Notify(ctx, func(ctx context.Context, l ListenerRef) error {
		return l.Bind(r.c).Heard(ctx, r.seq, text)
	})
	res := PostResult{Seq: r.seq, Delivered: n, Subscribers: r.subs.Len()}
	if err != nil {
		res.Err = err.Error()
	}
	return res, nil
}

func (r *room) Where(ctx context.Context) (string, error) { return r.c.SiloID(), nil }

func (r *room) ListenHere(ctx context.Context, key string) (ListenerRef, error) {
	h, ok := r.c.(grain.ObserverHost)
	if !ok {
		return ListenerRef{}, grain.ErrBadRequest
	}
	ref, handle, err := NewListenerRef(ctx, h, &LogListener{Key: key})
	if err != nil {
		return ListenerRef{}, err
	}
	r.mine = append(r.mine, handle)
	return ref, r.subs.Subscribe(ref)
}

// OnDeactivate deletes the room's own listeners.
func (r *room) OnDeactivate(ctx context.Context, _ grain.DeactivationReason) error {
	for _, h := range r.mine {
		h.Delete()
	}
	return nil
}

// LogListener records what it hears in HeardLog under Key.
type LogListener struct{ Key string }

func (l *LogListener) Heard(ctx context.Context, seq int64, text string) error {
	heardMu.Lock()
	defer heardMu.Unlock()
	heardLog[l.Key] = append(heardLog[l.Key], text)
	return nil
}

var (
	heardMu  sync.Mutex
	heardLog = map[string][]string{}
)

// HeardLog returns what LogListeners of key heard in this process.
func HeardLog(key string) []string {
	heardMu.Lock()
	defer heardMu.Unlock()
	return append([]string(nil), heardLog[key]...)
}
