package runtime_test

// Request values and cancellation (issue 11, item 6): values a caller sets
// with grain.WithRequestValue reach every grain of the call's chain, in
// this process and in others, and a caller's cancellation reaches a callee
// in another process.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/internal/transport"
)

// chainKeys returns the keys of three ReqCtx grains: a, hosted by one silo,
// and b and c, hosted by another (c to read what b recorded in its
// process). With a single silo all three are on it.
func chainKeys(t *testing.T, caller grain.Caller, prefix string, silos int) (a, b, c string) {
	t.Helper()
	ctx := ctxT(t)
	where := func(key string) string {
		s, err := testgrains.NewReqCtxRef(caller, key).Seen(ctx)
		if err != nil {
			t.Fatalf("Seen %s: %v", key, err)
		}
		return s.Silo
	}
	a = prefix + "a"
	sa := where(a)
	var sb string
	for i := 0; i < 64 && c == ""; i++ {
		key := fmt.Sprintf("%s%d", prefix, i)
		s := where(key)
		switch {
		case silos > 1 && s == sa:
		case b == "":
			b, sb = key, s
		case s == sb:
			c = key
		}
	}
	if c == "" {
		t.Fatalf("found no two grains on another silo than %s's (%s)", a, sa)
	}
	return a, b, c
}

func withValues(ctx context.Context, kv map[string]string) context.Context {
	for _, k := range slices.Sorted(maps.Keys(kv)) {
		ctx = grain.WithRequestValue(ctx, k, kv[k])
	}
	return ctx
}

// checkTwoHops calls a, which calls b, with request values, and checks
// that both see them (and that a call without values carries none).
func checkTwoHops(t *testing.T, caller grain.Caller, a, b string) {
	t.Helper()
	want := map[string]string{"trace": "4bf92f3577b34da6", "tenant": "acme", "empty": "", "long": strings.Repeat("v", 4000)}
	ctx := withValues(ctxT(t), want)
	seenA, err := testgrains.NewReqCtxRef(caller, a).Seen(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(seenA.Values, want) {
		t.Errorf("a (silo %s) saw %d values, want %d: %v", seenA.Silo, len(seenA.Values), len(want), seenA.Values)
	}
	seenB, err := testgrains.NewReqCtxRef(caller, a).Relay(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(seenB.Values, want) {
		t.Errorf("b (silo %s), called by a (silo %s), saw %d values, want %d", seenB.Silo, seenA.Silo, len(seenB.Values), len(want))
	}
	t.Logf("a on %s, b on %s", seenA.Silo, seenB.Silo)
	seenB, err = testgrains.NewReqCtxRef(caller, a).Relay(ctxT(t), b)
	if err != nil {
		t.Fatal(err)
	}
	if seenB.Values != nil {
		t.Errorf("a call without request values arrived with %v", seenB.Values)
	}
}

// checkCancel cancels a call to a, which waits on b's Block, and returns
// how long after the cancel b's context was done (as b's process
// recorded it).
func checkCancel(t *testing.T, caller grain.Caller, a, b, c, token string) time.Duration {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- testgrains.NewReqCtxRef(caller, a).RelayBlock(ctx, b, token) }()
	status := testgrains.NewReqCtxRef(caller, c)
	var rec testgrains.BlockRecord
	poll := func(done func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !done() {
			if time.Now().After(deadline) {
				t.Fatalf("b's Block: %+v", rec)
			}
			time.Sleep(2 * time.Millisecond)
			var err error
			if rec, err = status.Blocked(ctxT(t), token); err != nil {
				t.Fatal(err)
			}
		}
	}
	poll(func() bool { return rec.Started != 0 })
	at := time.Now()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %v, want context.Canceled", err)
	}
	poll(func() bool { return rec.Done != 0 })
	if rec.Err != context.Canceled.Error() {
		t.Fatalf("b's context ended with %q, want %q", rec.Err, context.Canceled.Error())
	}
	return time.Duration(rec.Done - at.UnixNano())
}

// latencies runs checkCancel n times and checks each under bound.
func latencies(t *testing.T, n int, bound time.Duration, run func(i int) time.Duration) {
	t.Helper()
	var ds []time.Duration
	for i := range n {
		ds = append(ds, run(i))
	}
	slices.Sort(ds)
	t.Logf("cancel to callee's ctx done, %d runs: min %v, median %v, max %v", n, ds[0], ds[len(ds)/2], ds[len(ds)-1])
	if ds[len(ds)-1] > bound {
		t.Errorf("slowest cancellation took %v, want under %v (all: %v)", ds[len(ds)-1], bound, ds)
	}
}

// looseBound is the cancellation bound of the tests that run several silos
// and the test's etcd client in this one race-instrumented process, where
// the point is that the cancellation arrives by the path under test, not
// how fast: on two shared cores their slowest runs took 70-85 ms. The
// issue's 100 ms check is TestProcessCancelReachesCalleeTwoHops.
const looseBound = time.Second

func TestProcessRequestValuesTwoHops(t *testing.T) {
	pc := startProcesses(t, 2, 0)
	a, b, _ := chainKeys(t, pc.client, "values-", 2)
	checkTwoHops(t, pc.client, a, b)
}

func TestProcessCancelReachesCalleeTwoHops(t *testing.T) {
	pc := startProcesses(t, 2, 0)
	a, b, c := chainKeys(t, pc.client, "cancel-", 2)
	latencies(t, 5, 100*time.Millisecond, func(i int) time.Duration {
		return checkCancel(t, pc.client, a, b, c, fmt.Sprintf("%s-%d-%d", t.Name(), time.Now().UnixNano(), i))
	})
}

// In one process (Silo.Client, grain to grain on one silo) request values
// and cancellation behave as across processes.
func TestRequestContextInProcess(t *testing.T) {
	f := start(t, 1, runtime.Config{})
	a, b, c := chainKeys(t, f.Client(), "local-", 1)
	checkTwoHops(t, f.Client(), a, b)
	latencies(t, 5, 100*time.Millisecond, func(i int) time.Duration {
		return checkCancel(t, f.Client(), a, b, c, fmt.Sprintf("%s-%d-%d", t.Name(), time.Now().UnixNano(), i))
	})
}

// Two silos in this process: grain to grain across silos goes through the
// transport, as between processes.
func TestRequestContextAcrossInProcessSilos(t *testing.T) {
	f := start(t, 2, runtime.Config{})
	a, b, c := chainKeys(t, f.Client(), "silos-", 2)
	checkTwoHops(t, f.Client(), a, b)
	latencies(t, 3, looseBound, func(i int) time.Duration {
		return checkCancel(t, f.Client(), a, b, c, fmt.Sprintf("%s-%d-%d", t.Name(), time.Now().UnixNano(), i))
	})
}

func TestWithRequestValueRefusesReservedKeys(t *testing.T) {
	for _, key := range []string{"", "granary.caller", "granary.caller.scheme", "granary.x"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("WithRequestValue(%q) did not panic", key)
				}
			}()
			grain.WithRequestValue(context.Background(), key, "v")
		}()
	}
	ctx := grain.WithRequestValue(context.Background(), "k", "1")
	ctx2 := grain.WithRequestValue(ctx, "k", "2")
	if v, _ := grain.RequestValue(ctx, "k"); v != "1" {
		t.Errorf("parent's value changed to %q", v)
	}
	if v, ok := grain.RequestValue(ctx2, "k"); !ok || v != "2" {
		t.Errorf("RequestValue = %q, %v; want 2", v, ok)
	}
	m := grain.RequestValues(ctx2)
	m["k"] = "changed"
	if v, _ := grain.RequestValue(ctx2, "k"); v != "2" {
		t.Error("RequestValues returned the context's own map")
	}
}

// Values over the bounds fail the call before it runs, in process and from
// a client alike; a peer that sends them anyway is refused.
func TestRequestValuesBounded(t *testing.T) {
	f := start(t, 1, runtime.Config{})
	ctx := ctxT(t)
	cl, err := runtime.Connect(ctx, runtime.ClientConfig{Gateways: []string{f.Silos[0].GatewayAddress()}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	big := grain.WithRequestValue(ctx, "big", strings.Repeat("x", grain.MaxRequestValueBytes))
	many := ctx
	for i := range grain.MaxRequestValues + 1 {
		many = grain.WithRequestValue(many, fmt.Sprint(i), "")
	}
	atLimit := grain.WithRequestValue(ctx, "big", strings.Repeat("x", grain.MaxRequestValueBytes-3))
	for name, caller := range map[string]grain.Caller{"in process": f.Client(), "client": cl} {
		r := testgrains.NewReqCtxRef(caller, "bounded")
		for what, c := range map[string]context.Context{"bytes": big, "entries": many} {
			_, err := r.Seen(c)
			if !errors.Is(err, grain.ErrTooLarge) || grain.OutcomeOf(err) != grain.OutcomeNotRun || !strings.Contains(err.Error(), "request values") {
				t.Errorf("%s, too many %s: %v (outcome %v), want ErrTooLarge, did not run", name, what, err, grain.OutcomeOf(err))
			}
		}
		if s, err := r.Seen(atLimit); err != nil || len(s.Values["big"]) != grain.MaxRequestValueBytes-3 {
			t.Errorf("%s, at the limit: %v", name, err)
		}
	}
	// A peer that does not check: the gateway and the silo listener refuse.
	tc := newRawClient(t)
	md := testgrains.ReqCtxType.Lookup("Seen")
	over := map[string]string{"big": strings.Repeat("x", grain.MaxRequestValueBytes)}
	for _, addr := range []string{f.Silos[0].GatewayAddress(), f.Silos[0].Address()} {
		_, err := tc.Call(ctx, addr, &transport.Envelope{Target: grain.ID{Type: testgrains.ReqCtxType.Name, Key: "bounded"},
			Method: md.Name, Fingerprint: md.Fingerprint, Context: over, Timeout: 10 * time.Second})
		if !errors.Is(err, grain.ErrTooLarge) {
			t.Errorf("raw call to %s with %d bytes of values: %v, want ErrTooLarge", addr, grain.MaxRequestValueBytes+3, err)
		}
		_, err = tc.Call(ctx, addr, &transport.Envelope{Target: grain.ID{Type: testgrains.ReqCtxType.Name, Key: "bounded"},
			Method: md.Name, Fingerprint: md.Fingerprint, Context: map[string]string{"": "x"}, Timeout: 10 * time.Second})
		if !errors.Is(err, grain.ErrBadRequest) {
			t.Errorf("raw call to %s with an empty key: %v, want ErrBadRequest", addr, err)
		}
	}
}

// A client's request values reach the grain through the gateway, whether
// it redirects the client to the grain's gateway or forwards the call, and
// so does the client's cancellation; a client cannot claim an identity
// through them.
func TestGatewayRequestContext(t *testing.T) {
	for _, forward := range []bool{false, true} {
		t.Run(fmt.Sprintf("forward=%v", forward), func(t *testing.T) {
			f := start(t, 2, runtime.Config{GatewayForward: forward})
			ctx := ctxT(t)
			cl, err := runtime.Connect(ctx, runtime.ClientConfig{Gateways: []string{f.Silos[0].GatewayAddress()}, RouteCacheSize: -1})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			// a on the second silo: the first one's gateway must redirect
			// or forward.
			var a, b, c string
			for i := 0; ; i++ {
				a, b, c = chainKeys(t, f.Client(), fmt.Sprintf("gw%d-", i), 2)
				if s, _ := testgrains.NewReqCtxRef(f.Client(), a).Seen(ctx); s.Silo != f.Silos[0].ID() {
					break
				}
			}
			checkTwoHops(t, cl, a, b)
			latencies(t, 3, looseBound, func(i int) time.Duration {
				return checkCancel(t, cl, a, b, c, fmt.Sprintf("%s-%d-%d", t.Name(), time.Now().UnixNano(), i))
			})
			st := f.Silos[0].GatewayStats()
			if forward && st.Forwarded == 0 || !forward && st.Redirected == 0 {
				t.Errorf("gateway stats %+v: the calls did not take the path under test", st)
			}
			tc := newRawClient(t)
			md := testgrains.ReqCtxType.Lookup("Seen")
			_, err = tc.Call(ctx, f.Silos[0].GatewayAddress(), &transport.Envelope{Target: grain.ID{Type: testgrains.ReqCtxType.Name, Key: a},
				Method: md.Name, Fingerprint: md.Fingerprint, Context: map[string]string{"granary.caller": "root"}, Timeout: 10 * time.Second})
			if !errors.Is(err, grain.ErrPermissionDenied) {
				t.Fatalf("a client claiming an identity: %v, want ErrPermissionDenied", err)
			}
		})
	}
}

// The caller's identity and the request values travel side by side: a
// grain two hops from an authenticated client sees both, and the values
// cannot displace the identity.
func TestRequestValuesWithIdentity(t *testing.T) {
	f := start(t, 2, runtime.Config{GatewayForward: true, Authenticator: runtime.StaticTokens(map[string]string{"tok": "alice"})})
	ctx := ctxT(t)
	cl, err := runtime.Connect(ctx, runtime.ClientConfig{Gateways: []string{f.Silos[0].GatewayAddress()},
		TokenSource: runtime.StaticToken("tok"), RouteCacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	a, b, _ := chainKeys(t, f.Client(), "id-", 2)
	vctx := grain.WithRequestValue(ctx, "caller", "mallory") // not the identity's key
	s, err := testgrains.NewReqCtxRef(cl, a).Relay(vctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if s.Identity != "alice" || s.Values["caller"] != "mallory" || len(s.Values) != 1 {
		t.Fatalf("b saw identity %q and values %v; want alice and {caller: mallory}", s.Identity, s.Values)
	}
}
