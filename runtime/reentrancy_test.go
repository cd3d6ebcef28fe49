package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/internal/transport"
)

// callHop calls id's Call (or Read, Peek) with path through caller.
var callHop = testgrains.CallHop

func TestCallBackIntoAWaitingGrainFailsAtOnceWithErrDeadlock(t *testing.T) {
	f := start(t, 1, runtime.Config{})
	ctx := ctxT(t)
	c := f.Client()
	for name, path := range map[string][]string{
		"A -> B -> A":      {"test.Hop/b1", "test.Hop/a1"},
		"A -> A":           {"test.Hop/a2"},
		"A -> B -> C -> A": {"test.Hop/b3", "test.HopReentrant/c3", "test.Hop/a3"},
	} {
		t.Run(strings.ReplaceAll(name, " ", ""), func(t *testing.T) {
			first := path[len(path)-1]
			began := time.Now()
			_, err := callHop(ctx, c, first, "Call", path...)
			took := time.Since(began)
			if !errors.Is(err, grain.ErrDeadlock) {
				t.Fatalf("got %v, want ErrDeadlock", err)
			}
			if took > 5*time.Second {
				t.Errorf("the deadlock took %v to be reported: it should fail at once, not at the deadline", took)
			}
			// The chain is named by grains and methods.
			want := first + ".Call -> "
			for _, p := range path {
				want += p + ".Call -> "
			}
			want = strings.TrimSuffix(want, " -> ")
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name the chain %q", err, want)
			}
			// The outer call ran and failed (it returned its callee's
			// error); the grains serve the next call.
			if o := grain.OutcomeOf(err); o != grain.OutcomeFailed {
				t.Errorf("outcome %v, want failed", o)
			}
			if got, err := callHop(ctx, c, first, "Call"); err != nil || got == "" {
				t.Fatalf("next call: %q, %v", got, err)
			}
			t.Logf("%s: ErrDeadlock after %v", name, took)
		})
	}
}

func TestCallBackAdmittedByReentrancyInterleaveOrReadOnly(t *testing.T) {
	f := start(t, 2, runtime.Config{})
	ctx := ctxT(t)
	for _, tc := range []struct {
		name, method string
		path         []string
		want         string
	}{
		{"call-chain reentrancy", "Call", []string{"test.Hop/b1", "test.HopChain/a1"}, "a1>b1>a1"},
		{"reentrant type", "Call", []string{"test.Hop/b2", "test.HopReentrant/a2"}, "a2>b2>a2"},
		{"reentrant self-call", "Call", []string{"test.HopReentrant/a3"}, "a3>a3"},
		{"interleave method", "Peek", []string{"test.Hop/b4", "test.Hop/a4"}, "a4>b4>a4"},
		{"read-only into read-only", "Read", []string{"test.Hop/b5", "test.Hop/a5"}, "a5>b5>a5"},
		{"deep chain back", "Call", []string{"test.Hop/b6", "test.Hop/c6", "test.HopChain/d6", "test.HopChain/a6"}, "a6>b6>c6>d6>a6"},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "-"), func(t *testing.T) {
			for i, s := range f.Silos {
				// From each silo: the hops cross silos as placement
				// spreads the grains.
				got, err := callHop(ctx, s.Client(), tc.path[len(tc.path)-1], tc.method, tc.path...)
				if err != nil || got != tc.want {
					t.Fatalf("from silo %d: got %q, %v; want %q", i, got, err, tc.want)
				}
			}
		})
	}
}

// TestInterleavingRules checks which second call may start while a first
// one waits on a call it made (to a Probe.Wait on a barrier): both must be
// waiting at once when the rules admit the second, and the second must not
// start before the first ends otherwise.
func TestInterleavingRules(t *testing.T) {
	f := start(t, 1, runtime.Config{})
	ctx := ctxT(t)
	c := f.Client()
	for i, tc := range []struct {
		name            string
		grain           string
		first, second   string
		bothWaitAtOnce  bool
		secondWaitsHere bool
	}{
		{name: "read-only with read-only", grain: "test.Hop/r", first: "Read", second: "Read", bothWaitAtOnce: true},
		{name: "interleave with a call", grain: "test.Hop/p", first: "Call", second: "Peek", bothWaitAtOnce: true},
		{name: "call with a read-only", grain: "test.Hop/q", first: "Read", second: "Call"},
		{name: "read-only with a call", grain: "test.Hop/s", first: "Call", second: "Read"},
		{name: "call with a call", grain: "test.Hop/t", first: "Call", second: "Call"},
		{name: "reentrant call with a call", grain: "test.HopReentrant/u", first: "Call", second: "Call", bothWaitAtOnce: true},
		{name: "call-chain reentrant type, unrelated call", grain: "test.HopChain/v", first: "Call", second: "Call"},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "-"), func(t *testing.T) {
			b1, b2 := fmt.Sprintf("il-%d-1", i), fmt.Sprintf("il-%d-2", i)
			base := f.obs.Waiting.Load()
			errs := make(chan error, 2)
			go func() {
				_, err := callHop(ctx, c, tc.grain, tc.first, "wait:"+b1)
				errs <- err
			}()
			waitFor(t, func() bool { return f.obs.Waiting.Load() == base+1 }, "the first call never waited")
			go func() {
				_, err := callHop(ctx, c, tc.grain, tc.second, "wait:"+b2)
				errs <- err
			}()
			if tc.bothWaitAtOnce {
				waitFor(t, func() bool { return f.obs.Waiting.Load() == base+2 }, "the second call did not start while the first waited")
			} else {
				time.Sleep(200 * time.Millisecond)
				if n := f.obs.Waiting.Load() - base; n != 1 {
					t.Fatalf("%d calls wait at once: the second started while the first waited", n)
				}
			}
			f.obs.Open(b1)
			f.obs.Open(b2)
			for range 2 {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	if v := f.obs.Violations.Load(); v != 0 {
		t.Fatalf("%d times two goroutines ran one activation's code at once", v)
	}
}

// TestOneGoroutineRunsAnActivationAtATime drives reentrant, call-chain
// reentrant and plain grains with calls that interleave (reentrancy,
// read-only, //granary:interleave, calls back through their chain) from
// many callers at once, over two silos: no two code segments of one
// activation may overlap (the observer counts overlaps; under -race the
// grains' unsynchronised field reports them too). The requests are chosen
// so that none can deadlock across requests (a cycle the runtime cannot
// see, which waits for the deadline): calls go through reentrant grains,
// read-only and interleaving calls through any, and the calls that come
// back to a plain or call-chain reentrant grain use a key of their caller.
func TestOneGoroutineRunsAnActivationAtATime(t *testing.T) {
	f := start(t, 2, runtime.Config{})
	ctx := ctxT(t)
	types := []string{"test.Hop", "test.HopReentrant", "test.HopChain"}
	const callers, calls = 16, 60
	var wg sync.WaitGroup
	var mu sync.Mutex
	failures := map[string]int{}
	deadlocks := 0
	for w := range callers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			shared := func(typ string) string { return fmt.Sprintf("%s/k%d", typ, rng.IntN(4)) }
			for range calls {
				method, path, wantDeadlock := "Call", []string(nil), false
				switch rng.IntN(4) {
				case 0: // through reentrant grains, to any leaf
					for range 1 + rng.IntN(3) {
						path = append(path, shared("test.HopReentrant"))
					}
					path = append(path, shared(types[rng.IntN(len(types))]))
				case 1: // read-only or interleaving calls through any grains
					// (a read-only call may not start while an
					// interleaving one, which is not read-only, waits:
					// they go to grains of their own)
					method = []string{"Read", "Peek"}[rng.IntN(2)]
					for range 2 + rng.IntN(3) {
						path = append(path, fmt.Sprintf("%s/%s%d", types[rng.IntN(len(types))], method, rng.IntN(4)))
					}
				case 2: // back through the chain into a call-chain reentrant grain
					own := fmt.Sprintf("test.HopChain/c%d", w)
					path = []string{own, shared("test.HopReentrant"), own}
				case 3: // back through the chain into a plain grain: refused
					own := fmt.Sprintf("test.Hop/d%d", w)
					path, wantDeadlock = []string{own, shared("test.HopReentrant"), own}, true
				}
				s := f.Silos[rng.IntN(len(f.Silos))]
				cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				_, err := callHop(cctx, s.Client(), path[0], method, path[1:]...)
				cancel()
				mu.Lock()
				switch {
				case wantDeadlock && errors.Is(err, grain.ErrDeadlock):
					deadlocks++
				case wantDeadlock:
					failures[fmt.Sprintf("%s %v: got %v, want ErrDeadlock", method, path, err)]++
				case err != nil:
					failures[fmt.Sprintf("%s %v: %v", method, path, err)]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for msg, n := range failures {
		t.Errorf("%d calls: %s", n, msg)
	}
	t.Logf("%d calls, %d refused as deadlocks as they must", callers*calls, deadlocks)
	if v := f.obs.Violations.Load(); v != 0 {
		t.Fatalf("%d times two goroutines ran one activation's code at once", v)
	}
}

// TestMalformedCallChainsFromAPeerAreBadRequests: a silo peer's call chain
// is checked before the call is queued: a chain not made of whole links,
// longer than 64 grains, with a malformed grain id or activation, gets
// grain.ErrBadRequest, and the silo serves the next call.
func TestMalformedCallChainsFromAPeerAreBadRequests(t *testing.T) {
	f := start(t, 1, runtime.Config{})
	ctx := ctxT(t)
	tc := newRawClient(t)
	addr := f.Silos[0].Address()
	target := grain.ID{Type: "test.Probe", Key: "chain"}
	p := testgrains.NewProbeRef(f.Client(), target.Key)
	if err := p.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	ping := testgrains.ProbeType.Lookup("Ping")
	long := make([]string, 0, 3*65)
	for range 65 {
		long = append(long, "test.Probe/x", "Ping", "1/2/3/silo")
	}
	for name, chain := range map[string][]string{
		"not whole links":    {"test.Probe/x", "Ping"},
		"65 grains":          long,
		"grain id":           {"noslash", "Ping", "1/2/3/silo"},
		"activation fields":  {"test.Probe/x", "Ping", "1/2/silo"},
		"activation numbers": {"test.Probe/x", "Ping", "a/2/3/silo"},
		"activation no silo": {"test.Probe/x", "Ping", "1/2/3/"},
		"negative seq":       {"test.Probe/x", "Ping", "1/-2/3/silo"},
	} {
		_, err := tc.Call(ctx, addr, &transport.Envelope{Target: target, Method: ping.Name, Fingerprint: ping.Fingerprint,
			Body: []byte{0x80}, Timeout: 10 * time.Second, Chain: chain})
		if !errors.Is(err, grain.ErrBadRequest) || !strings.Contains(err.Error(), "call chain") {
			t.Errorf("%s: got %v, want ErrBadRequest about the call chain", name, err)
		}
	}
	// A well-formed chain that names no activation of this silo runs.
	if _, err := tc.Call(ctx, addr, &transport.Envelope{Target: target, Method: ping.Name, Fingerprint: ping.Fingerprint,
		Body: []byte{0x80}, Timeout: 10 * time.Second, Chain: []string{"test.Hop/x", "Call", "7/8/9/some silo/with slash"}}); err != nil {
		t.Fatalf("a well-formed chain: %v", err)
	}
	if err := p.Ping(ctx); err != nil {
		t.Fatalf("the silo stopped serving: %v", err)
	}
}

// TestAFailedTurnWaitsForTheTurnsThatWait: on a reentrant type, a call
// panics while another waits on a call it made. The activation stays the
// grain's only one until the waiting turn ends (a call meanwhile waits and
// then runs on a new activation); the waiting turn's call fails, ran and
// failed, its changes unwritten.
func TestAFailedTurnWaitsForTheTurnsThatWait(t *testing.T) {
	f := start(t, 1, runtime.Config{})
	ctx := ctxT(t)
	c := f.Client()
	const g = "test.HopReentrant/fail"
	id := grain.ID{Type: "test.HopReentrant", Key: "fail"}
	base := f.obs.Waiting.Load()
	waited := make(chan error, 1)
	go func() {
		_, err := callHop(ctx, c, g, "Call", "wait:tear")
		waited <- err
	}()
	waitFor(t, func() bool { return f.obs.Waiting.Load() == base+1 }, "the first call never waited")
	if _, err := callHop(ctx, c, g, "Call", "panic"); !errors.Is(err, grain.ErrPanic) {
		t.Fatalf("the panicking call: %v, want ErrPanic", err)
	}
	later := make(chan error, 1)
	go func() {
		_, err := callHop(ctx, c, g, "Call")
		later <- err
	}()
	time.Sleep(200 * time.Millisecond)
	if n := f.obs.Activations(id); n != 1 {
		t.Fatalf("%d activations while the first call still waits: want the failed one only", n)
	}
	select {
	case err := <-later:
		t.Fatalf("a call ran while the failed activation still had a waiting turn: %v", err)
	default:
	}
	f.obs.Open("tear")
	err := <-waited
	if err == nil || grain.OutcomeOf(err) != grain.OutcomeFailed || !strings.Contains(err.Error(), "torn down") {
		t.Fatalf("the waiting call: %v (outcome %v); want ran and failed, torn down", err, grain.OutcomeOf(err))
	}
	if err := <-later; err != nil {
		t.Fatalf("the call after: %v", err)
	}
	if n := f.obs.Activations(id); n != 2 {
		t.Fatalf("%d activations, want 2 (the failed one, then a new one)", n)
	}
	if v := f.obs.Violations.Load(); v != 0 {
		t.Fatalf("%d overlaps", v)
	}
}
