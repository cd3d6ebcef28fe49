package runtime_test

// Placement across OS processes: silo processes, some hosting the placed
// types and one not, called from this process through runtime.Connect.

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/cluster"
	"github.com/granary-rt/granary/runtime/runtimetest"
)

// envPlacementRole tells a silo child which placement test types it
// hosts: "host" (test.PlaceHash, placed by hash, and test.PlaceLocal,
// prefer-local) or "caller" (test.PlaceCaller, whose grains create them).
const envPlacementRole = "GRANARY_TEST_PLACEMENT_ROLE"

// placeTypes are the types a "host" child registers, by name, with their
// placement.
var placeTypes = map[string]grain.Placement{"test.PlaceHash": grain.PlaceHash, "test.PlaceLocal": grain.PlacePreferLocal}

type whereReply struct{ Silo string }

type whereArgs struct{ Type, Key string }

// placeDesc is a grain type whose one method, Where, says the silo of
// the activation.
func placeDesc(name string) *grain.TypeDesc {
	return &grain.TypeDesc{Name: name, Methods: []grain.MethodDesc{
		{Name: "Where", NewArgs: func() any { return new(struct{}) }, NewReply: func() any { return new(whereReply) },
			Invoke: func(_ context.Context, impl any, _ any) (any, error) {
				return &whereReply{Silo: impl.(grain.Context).SiloID()}, nil
			}},
	}}
}

var (
	placeDescsMu sync.Mutex
	placeDescs   = map[string]*grain.TypeDesc{}
)

func placeDescOf(name string) *grain.TypeDesc {
	placeDescsMu.Lock()
	defer placeDescsMu.Unlock()
	d := placeDescs[name]
	if d == nil {
		d = placeDesc(name)
		placeDescs[name] = d
	}
	return d
}

// placeCallerType's Via creates (or asks) the grain its arguments name,
// from the caller's silo.
var placeCallerType = &grain.TypeDesc{Name: "test.PlaceCaller", Methods: []grain.MethodDesc{
	{Name: "Via", NewArgs: func() any { return new(whereArgs) }, NewReply: func() any { return new(whereReply) },
		Invoke: func(ctx context.Context, impl any, args any) (any, error) {
			a := args.(*whereArgs)
			return where(ctx, impl.(grain.Context), a.Type, a.Key)
		}},
}}

func where(ctx context.Context, c grain.Caller, typ, key string) (*whereReply, error) {
	d := placeDescOf(typ)
	r, err := grain.NewRef(c, d, key).Invoke(ctx, &d.Methods[0], &struct{}{})
	if err != nil {
		return nil, err
	}
	return r.(*whereReply), nil
}

// registerPlacementGrains registers the types envPlacementRole names (in
// a silo child; nothing without it).
func registerPlacementGrains(s *runtime.Silo) {
	identity := func(c grain.Context) any { return c }
	switch os.Getenv(envPlacementRole) {
	case "host":
		for name, p := range placeTypes {
			s.RegisterGrainType(placeDescOf(name), identity, grain.WithPlacement(p))
		}
	case "caller":
		s.RegisterGrainType(placeCallerType, identity)
	}
}

// TestPlacementAcrossProcesses: a grain type placed by hash lands on its
// rendezvous owner and one placed prefer-local on the client's gateway,
// whether the client reaches the cluster through etcd, through a gateway
// whose silo does not host the type, or through a grain on that silo.
func TestPlacementAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts silo processes")
	}
	name := fmt.Sprintf("proc-placement-%d", os.Getpid())
	roles := []string{"caller", "host", "host", "host"}
	silos := make([]*runtimetest.SiloProcess, len(roles))
	var wg sync.WaitGroup
	for i, role := range roles {
		wg.Go(func() {
			silos[i] = runtimetest.StartSiloProcess(t, runtimetest.SiloProcessOptions{
				Endpoints: endpoints, Cluster: name, Env: []string{envPlacementRole + "=" + role}})
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	ctx := ctxT(t)
	client, err := runtime.Connect(ctx, runtime.ClientConfig{Cluster: name, Etcd: runtime.EtcdConfig{Endpoints: endpoints}})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.View().WaitFor(ctx, func(s *cluster.Snapshot) bool {
		return len(s.Active()) == len(roles) && len(s.Hosting("test.PlaceHash")) == 3
	}); err != nil {
		t.Fatal(err)
	}
	var hostIDs []string
	for _, s := range silos[1:] {
		hostIDs = append(hostIDs, s.ID)
	}
	// The silos' own views may lag the client's for a moment after the
	// last one joined; the claim holds once they agree: wait until fresh
	// grains through every gateway land on their owners.
	batch := 0
	for _, s := range silos {
		gw := connectTo(t, []string{s.Gateway}, nil)
		runtimetest.Eventually(t, 20*time.Second, func() bool {
			batch++
			for i := range 20 {
				id := grain.ID{Type: "test.PlaceHash", Key: fmt.Sprintf("warm-%d-%d", batch, i)}
				if r, err := where(ctx, gw, id.Type, id.Key); err != nil || r.Silo != rendezvousOwnerOf(id, hostIDs) {
					return false
				}
			}
			return true
		}, "hash-placed grains through the gateway of %s did not land on their owners", s.ID)
	}
	caller, host := silos[0], silos[2]
	viaGrain := func(ctx context.Context, typ, key string) (*whereReply, error) {
		r, err := grain.NewRef(client, placeCallerType, "c").Invoke(ctx, &placeCallerType.Methods[0], &whereArgs{Type: typ, Key: key})
		if err != nil {
			return nil, err
		}
		return r.(*whereReply), nil
	}
	direct := func(c grain.Caller) func(ctx context.Context, typ, key string) (*whereReply, error) {
		return func(ctx context.Context, typ, key string) (*whereReply, error) { return where(ctx, c, typ, key) }
	}
	entries := []struct {
		name  string
		local string // the gateway PreferLocal must pick ("" if none hosts the type)
		call  func(ctx context.Context, typ, key string) (*whereReply, error)
	}{
		{"client through etcd", "", direct(client)},
		{"client through a hosting gateway", host.ID, direct(connectTo(t, []string{host.Gateway}, nil))},
		{"client through a gateway without the type", "", direct(connectTo(t, []string{caller.Gateway}, nil))},
		{"grain on a silo without the type", "", viaGrain},
	}
	for _, e := range entries {
		wrong := 0
		for i := range 200 {
			key := fmt.Sprintf("%s-%d", e.name, i)
			r, err := e.call(ctx, "test.PlaceHash", key)
			if err != nil {
				t.Fatalf("%s: %v", e.name, err)
			}
			if want := rendezvousOwnerOf(grain.ID{Type: "test.PlaceHash", Key: key}, hostIDs); r.Silo != want {
				if wrong++; wrong <= 3 {
					t.Errorf("%s: grain %s on %s, its rendezvous owner is %s", e.name, key, r.Silo, want)
				}
			}
		}
		if wrong > 0 {
			t.Errorf("%s: %d of 200 hash-placed grains not on their owner", e.name, wrong)
		}
		on := map[string]int{}
		for i := range 30 {
			r, err := e.call(ctx, "test.PlaceLocal", fmt.Sprintf("%s-%d", e.name, i))
			if err != nil {
				t.Fatalf("%s: %v", e.name, err)
			}
			on[r.Silo]++
		}
		switch {
		case on[caller.ID] > 0:
			t.Errorf("%s: prefer-local grains on %s, which does not host the type: %v", e.name, caller.ID, on)
		case e.local != "" && on[e.local] != 30:
			t.Errorf("%s: prefer-local grains placed %v; want all 30 on the gateway's silo %s", e.name, on, e.local)
		case e.local == "" && len(on) < 2:
			t.Errorf("%s: prefer-local grains without a local silo all on one silo (%v): want them at random", e.name, on)
		}
	}
}
