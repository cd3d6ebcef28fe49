package grain

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// DefaultMaxInFlight is how many calls FanOut runs at once unless
// MaxInFlight says otherwise.
const DefaultMaxInFlight = 32

// FanOutOption configures FanOut. MaxInFlight makes one.
type FanOutOption interface{ applyFanOut(*fanOutConfig) }

type fanOutConfig struct{ maxInFlight int }

type maxInFlight int

func (n maxInFlight) applyFanOut(c *fanOutConfig) { c.maxInFlight = int(n) }

// MaxInFlight bounds the calls FanOut runs at once to n (at least 1).
// Default DefaultMaxInFlight.
func MaxInFlight(n int) FanOutOption { return maxInFlight(max(n, 1)) }

// FanOutResult is what FanOut gathered: every distinct key is in exactly
// one of Answered, Failed, Unanswered and NotStarted. The calls that did
// not answer are Unanswered (started: their outcome is unknown, as after a
// timeout) and NotStarted (never started: nothing ran). A caller judges a
// partial result by them: use what answered, retry or report the rest.
type FanOutResult[K comparable, T any] struct {
	// Answered holds the result of every call that returned no error.
	Answered map[K]T
	// Failed holds the error of every call that returned one other than
	// the end of FanOut's context: a grain's own error, a runtime error
	// such as grain.ErrOverloaded, or a deadline of the call's own.
	Failed map[K]error
	// Unanswered lists, in the order of the keys, the calls that were
	// started but had not answered when FanOut's context ended: they
	// returned its deadline or cancellation error (or one matching it,
	// such as grain.ErrTimeout). Their outcome is unknown.
	Unanswered []K
	// NotStarted lists, in the order of the keys, the calls FanOut never
	// started because its context ended first. They did not run.
	NotStarted []K

	order  []K   // the distinct keys, in order
	ctxErr error // why the context ended, if it did before every answer
}

// Complete reports whether every call answered or failed: nothing is
// Unanswered or NotStarted.
func (r FanOutResult[K, T]) Complete() bool { return len(r.Unanswered) == 0 && len(r.NotStarted) == 0 }

// Err returns nil if every call answered. Otherwise it returns an error
// that counts the four sets and wraps the first failure in key order, or,
// when nothing failed, the error FanOut's context ended with (so that
// errors.Is(err, context.DeadlineExceeded) tells a partial result cut by
// the deadline).
func (r FanOutResult[K, T]) Err() error {
	if len(r.Failed) == 0 && r.Complete() {
		return nil
	}
	counts := fmt.Sprintf("grain: fan-out: %d answered, %d failed, %d unanswered, %d not started",
		len(r.Answered), len(r.Failed), len(r.Unanswered), len(r.NotStarted))
	if len(r.Failed) > 0 {
		k, err := r.firstFailure()
		return fmt.Errorf("%s: first failure: %v: %w", counts, k, err)
	}
	return fmt.Errorf("%s: %w", counts, r.ctxErr)
}

func (r FanOutResult[K, T]) firstFailure() (K, error) {
	for _, k := range r.order {
		if err, ok := r.Failed[k]; ok {
			return k, err
		}
	}
	var zero K
	return zero, nil
}

// FanOut calls call once for each distinct key, at most MaxInFlight at a
// time (default DefaultMaxInFlight), each on its own goroutine with a
// context derived from ctx, and gathers what they return: which keys
// answered and with what, which failed and with what error, and which did
// not answer before ctx ended (its deadline or cancellation). Calls start
// in the order of keys; a duplicate key is called once.
//
// When ctx ends, FanOut starts no more calls (the keys left are
// NotStarted, and call never sees them), and waits for the calls it
// started to return: they run with ctx's deadline and cancellation, as
// every grain call does, so they return promptly. FanOut never returns
// while a call it started is still running. A call that returns ctx's
// error, or one matching it (grain.ErrTimeout matches
// context.DeadlineExceeded), after ctx ended is Unanswered, not Failed; a
// call that returns a result even after ctx ended is Answered.
//
// call typically makes one grain call through a typed reference:
//
//	res := grain.FanOut(ctx, playerIDs, func(ctx context.Context, id string) (Profile, error) {
//		return NewPlayerRef(c, id).Profile(ctx)
//	}, grain.MaxInFlight(16))
//
// It is safe to use in a grain method, with the grain's Context as the
// Caller and the method's ctx: the calls, made with the context FanOut
// passes to call, belong to the turn, which waits in FanOut as on one
// call it made (the runtime's execution rule), and the turn's code
// continues only after every call returned. But call itself runs
// concurrently with the other calls, on other goroutines, so it must not
// touch the grain's state (read what it needs before FanOut, use the
// results after). A panic in call is re-raised by FanOut, in its caller's
// goroutine, after every call returned (a grain method's panic is
// recovered by the runtime).
func FanOut[K comparable, T any](ctx context.Context, keys []K, call func(ctx context.Context, key K) (T, error), opts ...FanOutOption) FanOutResult[K, T] {
	cfg := fanOutConfig{maxInFlight: DefaultMaxInFlight}
	for _, o := range opts {
		o.applyFanOut(&cfg)
	}
	keys = distinct(keys)
	res := FanOutResult[K, T]{Answered: make(map[K]T), Failed: make(map[K]error), order: keys}
	if len(keys) == 0 {
		return res
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Each call writes only its own slot; the slots are read after every
	// worker returned.
	type slot struct {
		state fanOutState
		val   T
		err   error
	}
	slots := make([]slot, len(keys))
	var (
		mu       sync.Mutex
		next     int
		panicked any
		wg       sync.WaitGroup
	)
	// claim returns the index of the next key to call, or -1 when there
	// is none or ctx ended or its deadline passed (the keys left are not
	// started).
	claim := func() int {
		mu.Lock()
		defer mu.Unlock()
		if next == len(keys) || over(ctx) || panicked != nil {
			return -1
		}
		next++
		return next - 1
	}
	run := func(i int) {
		defer func() {
			if p := recover(); p != nil {
				mu.Lock()
				if panicked == nil {
					panicked = p
				}
				mu.Unlock()
				slots[i].state = fanOutFailed
				slots[i].err = fmt.Errorf("grain: fan-out call for %v panicked: %v", keys[i], p)
				cancel()
			}
		}()
		v, err := call(ctx, keys[i])
		switch {
		case err == nil:
			slots[i].state, slots[i].val = fanOutAnswered, v
		case ended(ctx, err):
			slots[i].state = fanOutUnanswered
		default:
			slots[i].state, slots[i].err = fanOutFailed, err
		}
	}
	workers := min(cfg.maxInFlight, len(keys))
	wg.Add(workers)
	for range workers {
		go func() {
			defer wg.Done()
			for i := claim(); i >= 0; i = claim() {
				run(i)
			}
		}()
	}
	wg.Wait()
	if panicked != nil {
		panic(panicked)
	}
	for i, k := range keys {
		switch s := &slots[i]; s.state {
		case fanOutAnswered:
			res.Answered[k] = s.val
		case fanOutFailed:
			res.Failed[k] = s.err
		case fanOutUnanswered:
			res.Unanswered = append(res.Unanswered, k)
		default:
			res.NotStarted = append(res.NotStarted, k)
		}
	}
	if !res.Complete() {
		if res.ctxErr = context.Cause(ctx); res.ctxErr == nil {
			res.ctxErr = context.DeadlineExceeded // passed, its timer not fired yet
		}
	}
	return res
}

// ended reports whether err, a call's error, is ctx's end: its
// cancellation, or its deadline, once passed. (A call may see the deadline
// pass, on its own clock or from a remote silo, a moment before ctx's
// timer fires.)
func ended(ctx context.Context, err error) bool {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return over(ctx)
	case errors.Is(err, context.Canceled):
		return ctx.Err() != nil
	}
	return false
}

// over reports whether ctx ended or its deadline passed.
func over(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

type fanOutState uint8

const (
	fanOutNotStarted fanOutState = iota
	fanOutAnswered
	fanOutFailed
	fanOutUnanswered
)

// distinct returns keys without repetitions, in order of first appearance:
// keys itself if it has none.
func distinct[K comparable](keys []K) []K {
	seen := make(map[K]struct{}, len(keys))
	var out []K // nil until a repetition is found
	for i, k := range keys {
		if _, dup := seen[k]; dup {
			if out == nil {
				out = append(make([]K, 0, len(keys)), keys[:i]...)
			}
			continue
		}
		seen[k] = struct{}{}
		if out != nil {
			out = append(out, k)
		}
	}
	if out == nil {
		return keys
	}
	return out
}
