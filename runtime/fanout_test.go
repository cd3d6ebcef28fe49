package runtime_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/runtimetest"
)

// startFanOut starts n silos hosting the test grains and the Fanner.
func startFanOut(t *testing.T, n int, cfg runtime.Config, opts ...grain.TypeOption) *fixture {
	t.Helper()
	obs := testgrains.NewObserver()
	reg := registerTestGrains(obs, opts...)
	cfg.Etcd.Endpoints = endpoints
	c := runtimetest.NewCluster(t, n, runtimetest.Options{Config: cfg,
		Register: func(s *runtime.Silo) {
			reg(s)
			testgrains.RegisterFanner(s, testgrains.NewFanner(), opts...)
		}})
	return &fixture{Cluster: c, obs: obs}
}

// fanOutKeys returns 100 Probe keys: 5 that block past any deadline, 10
// that fail, and the others answer; and each set, sorted.
func fanOutKeys() (keys, ok, failed, blocked []string) {
	for i := range 100 {
		var k string
		switch {
		case i%20 == 7:
			k = fmt.Sprintf("block-%02d", i)
			blocked = append(blocked, k)
		case i%10 == 3:
			k = fmt.Sprintf("fail-%02d", i)
			failed = append(failed, k)
		default:
			k = fmt.Sprintf("ok-%02d", i)
			ok = append(ok, k)
		}
		keys = append(keys, k)
	}
	slices.Sort(ok)
	slices.Sort(failed)
	slices.Sort(blocked)
	return keys, ok, failed, blocked
}

// TestFanOutOverRuntime fans 100 Probe calls out with at most 8 in flight,
// from a silo's in-process client, from a client in another process' place
// (runtime.Connect) and from a grain's turn, over two silos: the answered,
// failed and unanswered sets are exactly the Probes that pinged, failed
// and blocked past the deadline; in flight never exceeded 8; FanOut
// returned with no call running.
func TestFanOutOverRuntime(t *testing.T) {
	f := startFanOut(t, 2, runtime.Config{})
	keys, wantOK, wantFailed, wantBlocked := fanOutKeys()
	const bound, deadline = 8, 2 * time.Second
	// Activate the Probes first, so that the deadline bounds calls, not
	// directory registrations.
	warm := grain.FanOut(ctxT(t), keys, func(ctx context.Context, key string) (struct{}, error) {
		return struct{}{}, testgrains.NewProbeRef(f.Client(), key).Ping(ctx)
	}, grain.MaxInFlight(16))
	if err := warm.Err(); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, rep testgrains.GatherReport) {
		t.Helper()
		if !slices.Equal(rep.Answered, wantOK) {
			t.Errorf("answered = %v\nwant %v", rep.Answered, wantOK)
		}
		if !slices.Equal(rep.Failed, wantFailed) {
			t.Errorf("failed = %v\nwant %v", rep.Failed, wantFailed)
		}
		for k, code := range rep.FailedCodes {
			if code != grain.CodeOf(testgrains.ErrDomain) {
				t.Errorf("failed[%s] has code %q, want the Probe's domain error", k, code)
			}
		}
		if !slices.Equal(rep.Unanswered, wantBlocked) || len(rep.NotStarted) != 0 {
			t.Errorf("unanswered = %v, not started = %v; want %v and none", rep.Unanswered, rep.NotStarted, wantBlocked)
		}
		if rep.PeakInFlight > bound || rep.PeakInFlight < bound-len(wantBlocked) {
			t.Errorf("%d calls in flight at most, want at most %d (and at least %d)", rep.PeakInFlight, bound, bound-len(wantBlocked))
		}
		if rep.RunningAfter != 0 {
			t.Errorf("FanOut returned with %d calls running", rep.RunningAfter)
		}
	}
	// fromCaller fans out from code holding caller, as Fanner.Gather does
	// in a turn.
	fromCaller := func(t *testing.T, caller grain.Caller) testgrains.GatherReport {
		ctx, cancel := context.WithTimeout(ctxT(t), deadline)
		defer cancel()
		start := time.Now()
		rep := testgrains.Gather(ctx, caller, keys, bound)
		if d := time.Since(start); d < deadline-50*time.Millisecond {
			t.Errorf("FanOut returned after %v, before the deadline %v that blocked calls wait for", d, deadline)
		}
		return rep
	}
	t.Run("client=silo", func(t *testing.T) { check(t, fromCaller(t, f.Silos[1].Client())) })
	t.Run("client=remote", func(t *testing.T) { check(t, fromCaller(t, connect(t, f, runtime.ClientConfig{}))) })
	t.Run("from=turn", func(t *testing.T) {
		rep, err := testgrains.NewFannerRef(f.Client(), "turn").Gather(ctxT(t),
			testgrains.GatherRequest{Keys: keys, MaxInFlight: bound, Timeout: deadline})
		if err != nil {
			t.Fatal(err)
		}
		check(t, rep)
	})
}

// TestFanOutNotStartedOverRuntime: calls that could not start before the
// deadline (every slot held by a blocked call) are reported as not
// started, and their grains were never called (never activated).
func TestFanOutNotStartedOverRuntime(t *testing.T) {
	f := startFanOut(t, 2, runtime.Config{})
	var keys []string
	for i := range 12 {
		keys = append(keys, fmt.Sprintf("block-ns-%02d", i))
	}
	keys = append(keys, "ok-ns-a", "ok-ns-b")
	rep, err := testgrains.NewFannerRef(f.Client(), "ns").Gather(ctxT(t),
		testgrains.GatherRequest{Keys: keys, MaxInFlight: 4, Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if want := keys[:4]; !slices.Equal(rep.Unanswered, want) {
		t.Errorf("unanswered = %v, want %v", rep.Unanswered, want)
	}
	want := slices.Clone(keys[4:])
	slices.Sort(want)
	if !slices.Equal(rep.NotStarted, want) || len(rep.Answered)+len(rep.Failed) != 0 {
		t.Errorf("not started = %v, answered %v, failed %v; want %v and none", rep.NotStarted, rep.Answered, rep.Failed, want)
	}
	if rep.PeakInFlight != 4 || rep.RunningAfter != 0 {
		t.Errorf("peak in flight %d, running after %d; want 4 and 0", rep.PeakInFlight, rep.RunningAfter)
	}
	for _, k := range keys[4:] {
		if n := f.obs.Activations(grain.ID{Type: "test.Probe", Key: k}); n != 0 {
			t.Errorf("probe %s not started but activated %d times", k, n)
		}
	}
}
