package runtime_test

// Placement is honoured wherever a new activation is placed (issue 11,
// item 8): by a client (through a gateway that hosts the type or one that
// does not), by a silo that does not host the type (in-process calls and
// calls from its grains), and by the silo a placed call reaches.
//
// The silos run in this process: placement is a routing decision each
// silo makes on its own membership view and directory, and these silos
// have their own, and talk over real gRPC. Nothing here needs a process
// to die. placement_process_test.go checks hash and prefer-local
// placement with silos in separate processes.

import (
	"context"
	"fmt"
	"hash/fnv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/cluster"
	"github.com/granary-rt/granary/runtime/internal/transport"
	"github.com/granary-rt/granary/runtime/runtimetest"
)

// callerType is a second grain type with who's methods: its Via asks a
// test.Who grain, so a grain on a silo that does not host test.Who
// creates one.
var callerType = func() *grain.TypeDesc {
	d := newWhoType()
	d.Name = "test.WhoCaller"
	return d
}()

// fillerType only counts as an activation: it loads a silo for
// least-activations placement.
var fillerType = func() *grain.TypeDesc {
	d := newWhoType()
	d.Name = "test.Filler"
	return d
}()

// placementCluster is four silos: silo 0 hosts test.WhoCaller and not
// test.Who, silos 1 to 3 host test.Who placed by p, and silo 1 also
// hosts test.Filler.
type placementCluster struct {
	*runtimetest.Cluster
	hosting []*runtime.Silo // silos 1 to 3
}

func startPlacement(t *testing.T, p grain.Placement) *placementCluster {
	t.Helper()
	return startPlacementWith(t, p, runtime.Config{})
}

func startPlacementWith(t *testing.T, p grain.Placement, cfg runtime.Config) *placementCluster {
	t.Helper()
	var n atomic.Int32
	cfg.Etcd.Endpoints = endpoints
	cfg.CollectionQuantum = 50 * time.Millisecond
	c := runtimetest.NewCluster(t, 4, runtimetest.Options{
		Config: cfg,
		Register: func(s *runtime.Silo) {
			i := n.Add(1) - 1
			if i == 0 {
				s.RegisterGrainType(callerType, func(gc grain.Context) any { return &who{c: gc, silo: s} })
				return
			}
			s.RegisterGrainType(whoType, func(gc grain.Context) any { return &who{c: gc, silo: s} }, grain.WithPlacement(p))
			if i == 1 {
				s.RegisterGrainType(fillerType, func(gc grain.Context) any { return &who{c: gc, silo: s} })
			}
		}})
	pc := &placementCluster{Cluster: c, hosting: c.Silos[1:]}
	waitFor(t, func() bool {
		for _, s := range c.Silos {
			if runtime.Hosting(s, whoType.Name) != 3 {
				return false
			}
		}
		return true
	}, "the silos' views do not all show the three silos hosting %s", whoType.Name)
	return pc
}

// rendezvousOwner is PlaceHash as documented, computed here on its own:
// the silo with the highest murmur3-finalised FNV-1a hash of
// "silo\x00type\x00key".
func rendezvousOwner(id grain.ID, silos []*runtime.Silo) string {
	ids := make([]string, len(silos))
	for i, s := range silos {
		ids[i] = s.ID()
	}
	return rendezvousOwnerOf(id, ids)
}

func rendezvousOwnerOf(id grain.ID, silos []string) string {
	best, bestScore := "", uint64(0)
	for _, s := range silos {
		h := fnv.New64a()
		fmt.Fprintf(h, "%s\x00%s\x00%s", s, id.Type, id.Key)
		x := h.Sum64()
		x ^= x >> 33
		x *= 0xff51afd7ed558ccd
		x ^= x >> 33
		x *= 0xc4ceb9fe1a85ec53
		x ^= x >> 33
		if best == "" || x > bestScore {
			best, bestScore = s, x
		}
	}
	return best
}

// entry is a way of creating a test.Who grain: it returns the silo the
// grain landed on.
type entry struct {
	name string
	// local is the silo that is "local" to the call for PlacePreferLocal
	// (nil: none hosts the type, so placement is random).
	local *runtime.Silo
	call  func(ctx context.Context, key string) (string, error)
}

func viaCaller(c grain.Caller, caller string) func(ctx context.Context, key string) (string, error) {
	return func(ctx context.Context, key string) (string, error) {
		r, err := grain.NewRef(c, callerType, caller).Invoke(ctx, &callerType.Methods[whoVia], &viaArgs{Key: key})
		if err != nil {
			return "", err
		}
		return r.(*whoReply).Silo, nil
	}
}

func direct(c grain.Caller) func(ctx context.Context, key string) (string, error) {
	return func(ctx context.Context, key string) (string, error) {
		r, err := askWho(ctx, c, key)
		if err != nil {
			return "", err
		}
		return r.Silo, nil
	}
}

// entries returns every way into pc: clients (through etcd, through one
// hosting gateway, through the gateway that does not host the type, with
// and without GatewayForward's behaviour on the client side), in-process
// callers of a hosting and of the non-hosting silo, and a grain on the
// non-hosting silo.
func (pc *placementCluster) entries(t *testing.T) []entry {
	t.Helper()
	ctx := ctxT(t)
	etcdClient, err := runtime.Connect(ctx, runtime.ClientConfig{Cluster: pc.Name, Etcd: runtime.EtcdConfig{Endpoints: pc.Endpoints}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { etcdClient.Close() })
	if _, err := etcdClient.View().WaitFor(ctx, func(s *cluster.Snapshot) bool { return len(s.Active()) == 4 }); err != nil {
		t.Fatal(err)
	}
	s0, s2 := pc.Silos[0], pc.Silos[2]
	return []entry{
		{name: "client through etcd", call: direct(etcdClient)},
		{name: "client through a hosting gateway", local: s2, call: direct(connectTo(t, []string{s2.GatewayAddress()}, nil))},
		{name: "client through a gateway without the type", call: direct(connectTo(t, []string{s0.GatewayAddress()}, nil))},
		{name: "in-process, hosting silo", local: s2, call: direct(s2.Client())},
		{name: "in-process, silo without the type", call: direct(s0.Client())},
		{name: "grain on a silo without the type", call: viaCaller(s0.Client(), "caller")},
	}
}

// placeGrains creates n new grains through e and returns where each landed.
func placeGrains(t *testing.T, e entry, prefix string, n int) map[string]string {
	t.Helper()
	ctx := ctxT(t)
	got := make(map[string]string, n)
	for i := range n {
		key := fmt.Sprintf("%s-%d", prefix, i)
		silo, err := e.call(ctx, key)
		if err != nil {
			t.Fatalf("%s: grain %s: %v", e.name, key, err)
		}
		got[key] = silo
	}
	return got
}

func countBySilo(placed map[string]string) map[string]int {
	c := map[string]int{}
	for _, s := range placed {
		c[s]++
	}
	return c
}

// TestPlaceHashLandsOnTheOwnerFromEveryEntry: 200 new grains created
// through each entry land on the rendezvous owner, whoever places them.
func TestPlaceHashLandsOnTheOwnerFromEveryEntry(t *testing.T) {
	pc := startPlacement(t, grain.PlaceHash)
	for _, e := range pc.entries(t) {
		wrong := 0
		placed := placeGrains(t, e, "hash-"+e.name, 200)
		for key, silo := range placed {
			if want := rendezvousOwner(grain.ID{Type: whoType.Name, Key: key}, pc.hosting); silo != want {
				if wrong++; wrong <= 3 {
					t.Errorf("%s: grain %s placed on %s; its rendezvous owner is %s", e.name, key, silo, want)
				}
			}
		}
		if wrong > 0 {
			t.Errorf("%s: %d of %d grains not on their rendezvous owner (spread %v)", e.name, wrong, len(placed), countBySilo(placed))
		}
	}
}

// TestPlacePreferLocal: a new grain lands on the silo that received the
// call when it hosts the type (the gateway, for a client; the calling
// silo, in-process or from a grain), and at random among the hosting
// silos otherwise.
func TestPlacePreferLocal(t *testing.T) {
	pc := startPlacement(t, grain.PlacePreferLocal)
	for _, e := range pc.entries(t) {
		placed := placeGrains(t, e, "local-"+e.name, 60)
		c := countBySilo(placed)
		if e.local != nil {
			if c[e.local.ID()] != len(placed) {
				t.Errorf("%s: grains placed %v; want all %d on %s", e.name, c, len(placed), e.local.ID())
			}
			continue
		}
		checkSpread(t, e.name, c, pc)
	}
}

// TestPlaceRandom: new grains spread over every hosting silo, and only
// them, from every entry.
func TestPlaceRandom(t *testing.T) {
	pc := startPlacement(t, grain.PlaceRandom)
	for _, e := range pc.entries(t) {
		c := countBySilo(placeGrains(t, e, "random-"+e.name, 60))
		checkSpread(t, e.name, c, pc)
		if len(c) != 3 {
			t.Errorf("%s: 60 grains placed on %d silos (%v); random placement should use all 3", e.name, len(c), c)
		}
	}
}

// checkSpread fails unless the grains counted in c are on hosting silos
// only, on more than one of them.
func checkSpread(t *testing.T, name string, c map[string]int, pc *placementCluster) {
	t.Helper()
	if c[pc.Silos[0].ID()] > 0 {
		t.Errorf("%s: %d grains placed on silo %s, which does not host the type", name, c[pc.Silos[0].ID()], pc.Silos[0].ID())
	}
	if len(c) < 2 {
		t.Errorf("%s: every grain on one silo (%v): want them spread at random", name, c)
	}
}

// TestPlaceLeastActivations: with one hosting silo loaded (its published
// count far above the others'), new grains from every entry go to the
// others, spread between them.
func TestPlaceLeastActivations(t *testing.T) {
	pc := startPlacement(t, grain.PlaceLeastActivations)
	loaded := pc.Silos[1]
	ctx := ctxT(t)
	const fill = 300
	for i := range fill {
		if _, err := grain.NewRef(loaded.Client(), fillerType, fmt.Sprint("fill-", i)).Invoke(ctx, &fillerType.Methods[whoWho], &struct{}{}); err != nil {
			t.Fatal(err)
		}
	}
	runtimetest.Eventually(t, 20*time.Second, func() bool {
		for _, s := range pc.Silos {
			if runtime.PublishedLoad(s, loaded.ID()) < fill {
				return false
			}
		}
		return true
	}, "silo %s's load of %d activations never reached every view", loaded.ID(), fill)
	for _, e := range pc.entries(t) {
		c := countBySilo(placeGrains(t, e, "least-"+e.name, 40))
		if c[loaded.ID()] > 0 {
			t.Errorf("%s: %d of 40 grains placed on %s, which has %d activations more than the others (spread %v)",
				e.name, c[loaded.ID()], loaded.ID(), fill, c)
		}
		checkSpread(t, e.name, c, pc)
		t.Logf("%s: placed %v; activations now %d, %d", e.name, c, pc.Silos[2].ActivationCount(), pc.Silos[3].ActivationCount())
	}
}

// TestPlacedCallIsHostedByItsReceiver: a call another silo placed (hops
// 1) is hosted by the silo it reaches, even if that silo's own view would
// place it elsewhere: the placing silo's view is as good as the
// receiver's while the membership changes, and re-placing at the
// receiver could bounce a call between two silos whose views differ.
func TestPlacedCallIsHostedByItsReceiver(t *testing.T) {
	pc := startPlacement(t, grain.PlaceHash)
	ctx := ctxT(t)
	// A key whose owner is silo 3, sent as placed on silo 2.
	var key string
	for i := 0; ; i++ {
		key = fmt.Sprint("placed-", i)
		if rendezvousOwner(grain.ID{Type: whoType.Name, Key: key}, pc.hosting) == pc.Silos[3].ID() {
			break
		}
	}
	tc, err := transport.NewClient(transport.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	md := &whoType.Methods[whoWho]
	resp, err := tc.Call(ctx, pc.Silos[2].Address(), &transport.Envelope{Target: grain.ID{Type: whoType.Name, Key: key},
		Method: md.Name, Fingerprint: md.Fingerprint, Hops: 1, Body: []byte{0x80}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != transport.StatusOK {
		t.Fatalf("placed call answered %v", resp.Status)
	}
	// Every later call finds it there, through the directory.
	for _, e := range pc.entries(t) {
		if silo, err := e.call(ctx, key); err != nil || silo != pc.Silos[2].ID() {
			t.Errorf("%s: grain %s on %s, %v; want %s, where the placed call activated it", e.name, key, silo, err, pc.Silos[2].ID())
		}
	}
}

// TestPlacementUnderGatewayForward: under Config.GatewayForward a client
// that reaches one gateway is never sent to another, also when that
// gateway does not host the type and the grain is placed elsewhere: the
// gateway forwards the call to where the hosting silo placed it.
func TestPlacementUnderGatewayForward(t *testing.T) {
	pc := startPlacementWith(t, grain.PlaceHash, runtime.Config{GatewayForward: true})
	ctx := ctxT(t)
	for _, gw := range []*runtime.Silo{pc.Silos[0], pc.Silos[1]} {
		c := connectTo(t, []string{gw.GatewayAddress()}, nil)
		for i := range 40 {
			id := grain.ID{Type: whoType.Name, Key: fmt.Sprintf("fwd-%s-%d", gw.ID(), i)}
			silo, err := direct(c)(ctx, id.Key)
			if err != nil {
				t.Fatal(err)
			}
			if want := rendezvousOwner(id, pc.hosting); silo != want {
				t.Errorf("through %s: grain %s placed on %s; its rendezvous owner is %s", gw.ID(), id, silo, want)
			}
			if addr, ok := runtime.ClientRoute(c, id); ok && addr != gw.GatewayAddress() {
				t.Errorf("through %s under GatewayForward: the client was sent to gateway %s for %s", gw.ID(), addr, id)
			}
		}
	}
}

// TestPlaceHashOneWay: a one-way call that creates a grain is placed as
// a two-way one, from a silo with or without the type and from a client.
func TestPlaceHashOneWay(t *testing.T) {
	pc := startPlacement(t, grain.PlaceHash)
	ctx := ctxT(t)
	callers := []grain.Caller{pc.Silos[0].Client(), pc.Silos[1].Client(), connectTo(t, []string{pc.Silos[0].GatewayAddress()}, nil)}
	const perCaller = 30
	for i, c := range callers {
		for k := range perCaller {
			if _, err := grain.NewRef(c, whoType, fmt.Sprintf("oneway-%d-%d", i, k)).Invoke(ctx, &whoType.Methods[whoNote], &struct{}{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	runtimetest.Eventually(t, 10*time.Second, func() bool {
		n := 0
		for _, s := range pc.hosting {
			n += s.ActivationCount()
		}
		return n == len(callers)*perCaller
	}, "the one-way calls did not create %d grains", len(callers)*perCaller)
	for i := range callers {
		for k := range perCaller {
			id := grain.ID{Type: whoType.Name, Key: fmt.Sprintf("oneway-%d-%d", i, k)}
			r, err := askWho(ctx, pc.Silos[0].Client(), id.Key)
			if err != nil {
				t.Fatal(err)
			}
			if want := rendezvousOwner(id, pc.hosting); r.Silo != want {
				t.Errorf("caller %d: one-way call placed %s on %s; its rendezvous owner is %s", i, id, r.Silo, want)
			}
		}
	}
}
