package grain

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// DefaultObserverSetMax is the number of subscribers an ObserverSet holds
// when NewObserverSet is given no bound.
const DefaultObserverSetMax = 10_000

// maxNotifyErrors bounds the errors Notify joins into the one it returns.
const maxNotifyErrors = 8

// ObserverSet is a grain's set of subscribers (observer references, or any
// comparable value that names one), each with an expiry, in the manner of
// Orleans' ObserverManager: a subscriber that does not subscribe again
// within the set's expiry is forgotten, and one whose notification fails
// with ErrObserverGone is dropped at once. So a grain keeps no state for
// clients that went away, whether or not anyone told it.
//
//	type room struct {
//		c     grain.Context
//		subs  *grain.ObserverSet[lobby.ChatObserverRef]
//	}
//
//	func (r *room) Subscribe(ctx context.Context, o lobby.ChatObserverRef) error {
//		return r.subs.Subscribe(o) // clients call it again within the expiry
//	}
//
//	func (r *room) Post(ctx context.Context, text string) error {
//		r.subs.Notify(ctx, func(ctx context.Context, o lobby.ChatObserverRef) error {
//			return o.Bind(r.c).Receive(ctx, text)
//		})
//		return nil
//	}
//
// It lives in the activation's memory (not its persistent state); it is
// safe for concurrent use.
type ObserverSet[T comparable] struct {
	expiry time.Duration
	max    int

	mu    sync.Mutex
	subs  map[T]time.Time // subscriber -> when it expires (zero: never)
	order []T             // subscribers, for Notify; same members as subs
}

// NewObserverSet returns an empty set whose subscribers expire after
// expiry unless they subscribe again (expiry <= 0: they never expire and
// leave only by Unsubscribe or a gone notification), holding at most max
// of them (max <= 0: DefaultObserverSetMax).
func NewObserverSet[T comparable](expiry time.Duration, max int) *ObserverSet[T] {
	if max <= 0 {
		max = DefaultObserverSetMax
	}
	return &ObserverSet[T]{expiry: expiry, max: max, subs: make(map[T]time.Time)}
}

// Subscribe adds o, or renews its expiry if it is there. A full set (after
// dropping the expired subscribers) refuses a new subscriber with an error
// matching ErrOverloaded.
func (s *ObserverSet[T]) Subscribe(o T) error {
	now := time.Now()
	var until time.Time
	if s.expiry > 0 {
		until = now.Add(s.expiry)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.subs[o]; ok {
		s.subs[o] = until
		return nil
	}
	if len(s.subs) >= s.max {
		s.expireLocked(now)
		if len(s.subs) >= s.max {
			return fmt.Errorf("%w: observer set holds its maximum of %d subscribers", ErrOverloaded, s.max)
		}
	}
	s.subs[o] = until
	s.order = append(s.order, o)
	return nil
}

// Unsubscribe removes o; removing one that is not there does nothing.
func (s *ObserverSet[T]) Unsubscribe(o T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeLocked(o)
}

// Len returns the number of subscribers that have not expired.
func (s *ObserverSet[T]) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(time.Now())
	return len(s.subs)
}

// Subscribers returns the subscribers that have not expired, in no
// particular order.
func (s *ObserverSet[T]) Subscribers() []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(time.Now())
	return append([]T(nil), s.order...)
}

// Notify drops the expired subscribers and calls fn for each of the
// others, one after another, on this goroutine (an observer call only
// waits until the observer's silo accepted it, see ObserverCaller). A
// subscriber whose call fails with an error matching ErrObserverGone is
// removed. Notify returns how many calls succeeded, and the other
// failures joined (at most 8 of them, with a count of the rest); those
// subscribers stay until they expire. It stops early, with ctx's error,
// when ctx ends.
func (s *ObserverSet[T]) Notify(ctx context.Context, fn func(ctx context.Context, o T) error) (delivered int, err error) {
	targets := s.Subscribers()
	var errs []error
	failed := 0
	for _, o := range targets {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("grain: notify stopped after %d of %d subscribers: %w", delivered+failed, len(targets), err))
			break
		}
		err := fn(ctx, o)
		switch {
		case err == nil:
			delivered++
		case errors.Is(err, ErrObserverGone):
			s.Unsubscribe(o)
		default:
			failed++
			if len(errs) < maxNotifyErrors {
				errs = append(errs, err)
			}
		}
	}
	if failed > len(errs) && failed > maxNotifyErrors {
		errs = append(errs, fmt.Errorf("grain: and %d more failed notifications", failed-maxNotifyErrors))
	}
	return delivered, errors.Join(errs...)
}

// expireLocked drops the subscribers whose expiry passed.
func (s *ObserverSet[T]) expireLocked(now time.Time) {
	if s.expiry <= 0 {
		return
	}
	for i := 0; i < len(s.order); {
		o := s.order[i]
		if until := s.subs[o]; !until.IsZero() && !now.Before(until) {
			s.removeAt(i)
			continue
		}
		i++
	}
}

func (s *ObserverSet[T]) removeLocked(o T) {
	if _, ok := s.subs[o]; !ok {
		return
	}
	for i, x := range s.order {
		if x == o {
			s.removeAt(i)
			return
		}
	}
}

// removeAt removes the subscriber at index i of order (swapping the last
// one into its place).
func (s *ObserverSet[T]) removeAt(i int) {
	delete(s.subs, s.order[i])
	last := len(s.order) - 1
	s.order[i] = s.order[last]
	var zero T
	s.order[last] = zero
	s.order = s.order[:last]
}
