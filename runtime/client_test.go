package runtime_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/cluster"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/runtimetest"
)

// connect returns a client of f's cluster that discovers the silos through
// etcd, once it sees all of them.
func connect(t *testing.T, f *fixture, cfg runtime.ClientConfig) *runtime.Client {
	t.Helper()
	ctx := ctxT(t)
	cfg.Cluster = f.Name
	cfg.Etcd.Endpoints = f.Endpoints
	c, err := runtime.Connect(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.View().WaitFor(ctx, func(s *cluster.Snapshot) bool { return len(s.Active()) == len(f.Silos) }); err != nil {
		t.Fatalf("client never saw %d active silos: %v", len(f.Silos), err)
	}
	return c
}

// A client does not read the directory: its first call to a grain goes to
// a gateway that serves it or forwards it to the silo placing the grain,
// and its second may be redirected to the host's gateway; it remembers the
// gateway that answered, so every later call takes one hop.
func TestClientCallsTakeOneHopOnceItKnowsTheHost(t *testing.T) {
	f := start(t, 3, runtime.Config{})
	c := connect(t, f, runtime.ClientConfig{})
	ctx := ctxT(t)
	const grains, rounds, warm = 30, 3, 2
	for range warm {
		for i := range grains {
			if _, err := testgrains.NewCounterRef(c, fmt.Sprint("hop-", i)).Add(ctx, 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := runtime.ClientRoutes(c); n != grains {
		t.Fatalf("client remembers %d grains, want %d", n, grains)
	}
	sent := runtime.ClientSent(c)
	for r := range rounds {
		for i := range grains {
			n, err := testgrains.NewCounterRef(c, fmt.Sprint("hop-", i)).Add(ctx, 1)
			if err != nil || n != int64(r+warm+1) {
				t.Fatalf("round %d, grain %d: %d, %v; want %d", r, i, n, err, r+warm+1)
			}
		}
	}
	if got := runtime.ClientSent(c) - sent; got != grains*rounds {
		t.Fatalf("%d calls to grains the client knows took %d requests, want one each", grains*rounds, got)
	}
}

// A remembered silo that no longer hosts the grain answers "not here, try
// X": the client follows, remembers X instead, and goes there directly
// afterwards.
func TestClientReplacesARouteANotHereAnswerCorrects(t *testing.T) {
	f := start(t, 2, runtime.Config{})
	c := connect(t, f, runtime.ClientConfig{})
	ctx := ctxT(t)
	ref := testgrains.NewCounterRef(c, "moved")
	for range 2 { // the first may be forwarded, the second redirected
		if _, err := ref.Add(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	host, ok := runtime.ClientRoute(c, ref.ID())
	if !ok {
		t.Fatal("the client does not remember the gateway that served the call")
	}
	other := f.Silos[0]
	if other.GatewayAddress() == host {
		other = f.Silos[1]
	}
	runtime.SetClientRoute(c, ref.ID(), other.ID(), other.GatewayAddress())
	sent := runtime.ClientSent(c)
	if n, err := ref.Add(ctx, 1); err != nil || n != 3 {
		t.Fatalf("through the wrong gateway: %d, %v; want 3", n, err)
	}
	if got := runtime.ClientSent(c) - sent; got != 2 {
		t.Fatalf("a call sent to the wrong gateway took %d requests, want 2 (not here, then the host's)", got)
	}
	if got, _ := runtime.ClientRoute(c, ref.ID()); got != host {
		t.Fatalf("client remembers gateway %q after the redirect, want %q", got, host)
	}
	sent = runtime.ClientSent(c)
	if n, err := ref.Add(ctx, 1); err != nil || n != 4 {
		t.Fatalf("after the redirect: %d, %v; want 4", n, err)
	}
	if got := runtime.ClientSent(c) - sent; got != 1 {
		t.Fatalf("the call after the redirect took %d requests, want 1", got)
	}
}

func TestClientRouteCacheIsBounded(t *testing.T) {
	f := start(t, 2, runtime.Config{})
	ctx := ctxT(t)
	for _, tc := range []struct {
		size, want int
	}{{8, 8}, {-1, 0}} {
		c := connect(t, f, runtime.ClientConfig{RouteCacheSize: tc.size})
		for i := range 40 {
			ref := testgrains.NewCounterRef(c, fmt.Sprint("bound-", i))
			if _, err := ref.Add(ctx, 1); err != nil {
				t.Fatalf("RouteCacheSize %d: %v", tc.size, err)
			}
		}
		if n := runtime.ClientRoutes(c); n != tc.want {
			t.Errorf("RouteCacheSize %d: client remembers %d grains after calling 40, want %d", tc.size, n, tc.want)
		}
	}
}

// With static gateways (no etcd at all) the client remembers hosts too.
func TestClientWithGatewaysRemembersHosts(t *testing.T) {
	f := start(t, 2, runtime.Config{})
	ctx := ctxT(t)
	c, err := runtime.Connect(ctx, runtime.ClientConfig{Gateways: []string{f.Silos[0].GatewayAddress()}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ids := make([]grain.ID, 20)
	for round := range 2 { // the first call may be forwarded, the second redirected
		for i := range ids {
			ref := testgrains.NewCounterRef(c, fmt.Sprint("gw-", i))
			ids[i] = ref.ID()
			if n, err := ref.Add(ctx, 1); err != nil || n != int64(round+1) {
				t.Fatalf("%s: %d, %v; want %d", ref.ID(), n, err, round+1)
			}
		}
	}
	sent := runtime.ClientSent(c)
	for _, id := range ids {
		if n, err := testgrains.NewCounterRef(c, id.Key).Add(ctx, 1); err != nil || n != 3 {
			t.Fatalf("%s: %d, %v; want 3", id, n, err)
		}
	}
	if got := runtime.ClientSent(c) - sent; got != uint64(len(ids)) {
		t.Fatalf("%d calls through one gateway to known grains took %d requests, want one each", len(ids), got)
	}
}

// For a type placed by hash, the client's first pick is the silo placement
// chooses: a new grain is activated in one hop.
func TestClientFirstCallToAHashPlacedGrainTakesOneHop(t *testing.T) {
	f := start(t, 3, runtime.Config{}, grain.WithPlacement(grain.PlaceHash))
	c := connect(t, f, runtime.ClientConfig{})
	ctx := ctxT(t)
	batch := 0
	// The silos' own views may lag the client's for a moment after the
	// last one joined; until they agree, a call may be redirected.
	runtimetest.Eventually(t, 10*time.Second, func() bool {
		batch++
		sent := runtime.ClientSent(c)
		for i := range 20 {
			if _, err := testgrains.NewCounterRef(c, fmt.Sprint("hash-", batch, "-", i)).Add(ctx, 1); err != nil {
				t.Fatal(err)
			}
		}
		return runtime.ClientSent(c)-sent == 20
	}, "first calls to 20 hash-placed grains kept taking more than one request each")
}

// A silo the view still lists but that cannot be dialed (it just died) is
// not picked again for the same call: the call goes to another silo.
func TestClientRetriesAnotherSiloWhenItsPickCannotBeDialed(t *testing.T) {
	f := start(t, 2, runtime.Config{}, grain.WithPlacement(grain.PlacePreferLocal))
	c := connect(t, f, runtime.ClientConfig{})
	ctx := ctxT(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: f.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	// A registered, active silo nobody can reach: what a view shows until
	// a killed silo's lease expires.
	ghost, err := cluster.Join(ctx, cli, cluster.Config{Prefix: runtime.ClusterPrefix(f.Name), SiloID: "ghost",
		Address: "127.0.0.1:1", GrainTypes: []string{testgrains.CounterType.Name}})
	if err != nil {
		t.Fatal(err)
	}
	defer ghost.Leave(context.WithoutCancel(ctx))
	if err := ghost.SetStatus(ctx, cluster.StatusActive); err != nil {
		t.Fatal(err)
	}
	if _, err := c.View().WaitFor(ctx, func(s *cluster.Snapshot) bool { return len(s.Active()) == 3 }); err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		if _, err := testgrains.NewCounterRef(c, fmt.Sprint("ghost-", i)).Add(ctx, 1); err != nil {
			t.Fatalf("grain %d: %v", i, err)
		}
	}
}
