package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/granary-rt/granary/grain"
)

// workload runs clients that read and write registers and record every
// call in a history.
type workload struct {
	h    *history
	keys []string
	// timeout bounds every call: a put that times out has an unknown
	// outcome, so it must stay short for the check to stay fast.
	timeout time.Duration
	// pause is the mean pause between two calls of one client.
	pause time.Duration

	values atomic.Int64 // every put writes a value no other put writes
	wg     sync.WaitGroup
}

func (w *workload) get(client int, c grain.Caller, key string) op {
	ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
	defer cancel()
	o := op{Client: client, Key: key, Kind: opGet, Call: w.h.now()}
	r, err := NewRegisterRef(c, key).Get(ctx)
	o.Return = w.h.now()
	if err != nil {
		o.Err = err.Error()
	} else {
		o.OK, o.Value, o.Silo = true, r.Value, r.Silo
	}
	w.h.add(o)
	return o
}

func (w *workload) put(client int, c grain.Caller, key string) op {
	ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
	defer cancel()
	o := op{Client: client, Key: key, Kind: opPut, Value: w.values.Add(1), Call: w.h.now()}
	silo, err := NewRegisterRef(c, key).Put(ctx, o.Value)
	o.Return = w.h.now()
	if err != nil {
		if grain.OutcomeOf(err) == grain.OutcomeNotRun {
			// The runtime says it did not run: it is not part of the
			// history, so a read that ever returns its value fails the
			// check (and shows the error's outcome was wrong).
			return o
		}
		// It may or may not have landed.
		o.Err = err.Error()
	} else {
		o.OK, o.Silo = true, silo
	}
	w.h.add(o)
	return o
}

// churnOneIn: one call in churnOneIn asks for the grain's deactivation, so
// that grains keep moving between silos (activation churn): a fault then
// always finds some grains on the silo it hits.
const churnOneIn = 25

// deactivate asks key's activation to deactivate when idle. It changes no
// value, so it is not part of the history.
func (w *workload) deactivate(c grain.Caller, key string) {
	ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
	defer cancel()
	_ = NewRegisterRef(c, key).Deactivate(ctx)
}

// start runs a client loop on c until stop closes: random keys, reads and
// writes half and half, now and then a deactivation. After a failed call it only reads, until a read
// succeeds: writes of unknown outcome make the check slower, and a client
// whose gateway is down would otherwise pile them up.
func (w *workload) start(client int, c grain.Caller, stop <-chan struct{}) {
	w.wg.Go(func() {
		rng := rand.New(rand.NewPCG(uint64(client), uint64(time.Now().UnixNano())))
		healthy := true
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(rng.Int64N(int64(2*w.pause) + 1))):
			}
			key := w.keys[rng.IntN(len(w.keys))]
			if healthy && rng.IntN(churnOneIn) == 0 {
				w.deactivate(c, key)
				continue
			}
			var o op
			if healthy && rng.IntN(2) == 0 {
				o = w.put(client, c, key)
			} else {
				o = w.get(client, c, key)
			}
			healthy = o.OK
			if !o.OK {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		}
	})
}

// finalReads reads every key through c after the faults healed, retrying
// each for up to timeout; the reads are part of the history, so the check
// also proves that no acknowledged write was lost.
func (w *workload) finalReads(client int, c grain.Caller, timeout time.Duration) error {
	for _, key := range w.keys {
		deadline := time.Now().Add(timeout)
		for {
			o := w.get(client, c, key)
			if o.OK {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("final read of %s still fails %v after the faults healed: %s", key, timeout, o.Err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

func keyNames(prefix string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s%02d", prefix, i)
	}
	return keys
}
