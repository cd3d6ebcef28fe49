package cluster_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/granary-rt/granary/runtime/cluster"
)

// fenceByPartition joins a silo over a client whose keepalives can be cut,
// cuts them, and waits until the silo fenced itself at its deadline. etcd
// still holds the silo's key then, for FenceMargin or a little more.
func fenceByPartition(t *testing.T, cfg cluster.Config) (*cluster.Member, *partition) {
	t.Helper()
	p := new(partition)
	m := join(t, newClient(t, p.option()), cfg)
	p.on.Store(true)
	select {
	case <-m.Done():
	case <-time.After(2 * m.TTL()):
		t.Fatal("member not fenced 2 TTLs after losing etcd")
	}
	if !errors.Is(m.Err(), cluster.ErrFenced) {
		t.Fatalf("Err = %v, want ErrFenced", m.Err())
	}
	return m, p
}

// TestRejoinAfterFence: a fenced silo's id stays taken until etcd expires
// its lease; a new id joins at once; the same id joins with WaitForID once
// the old key is gone; every rejoin is a larger incarnation, and the view
// tells the old incarnation dead.
func TestRejoinAfterFence(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	cli := newClient(t)
	prefix := testPrefix(t)
	v := watchView(t, cli, prefix)
	// A wide margin leaves time to observe the key held after fencing.
	cfg := cluster.Config{Prefix: prefix, SiloID: "phoenix", Address: "10.0.0.9:7000", GrainTypes: []string{"t"},
		TTL: 2 * time.Second, FenceMargin: 900 * time.Millisecond}
	old, _ := fenceByPartition(t, cfg)
	oldInc := old.Info().Incarnation
	fencedAt := time.Now()

	if _, err := cluster.Join(ctx, cli, cfg); !errors.Is(err, cluster.ErrSiloIDInUse) {
		t.Fatalf("Join with the fenced silo's id while its lease lives: %v, want ErrSiloIDInUse", err)
	}
	other := join(t, cli, cluster.Config{Prefix: prefix, SiloID: "phoenix-2"})
	if other.Info().Incarnation <= oldInc {
		t.Errorf("new id: incarnation %d, want > %d", other.Info().Incarnation, oldInc)
	}

	wait := cfg
	wait.WaitForID = true
	reborn := join(t, cli, wait)
	t.Logf("rejoined with WaitForID %v after fencing", time.Since(fencedAt))
	if inc := reborn.Info().Incarnation; inc <= other.Info().Incarnation {
		t.Errorf("rejoin incarnation %d, want > %d", inc, other.Info().Incarnation)
	}
	if since := time.Since(fencedAt); since > cfg.TTL+time.Second {
		t.Errorf("WaitForID took %v after fencing, more than TTL+1s", since)
	}
	s := waitView(t, v, 5*time.Second, "phoenix's new incarnation active", func(s *cluster.Snapshot) bool {
		info, ok := s.Get("phoenix")
		return ok && info.Incarnation == reborn.Info().Incarnation && info.Status == cluster.StatusActive
	})
	if !s.IsDead("phoenix", oldInc) || s.IsDead("phoenix", reborn.Info().Incarnation) {
		t.Errorf("IsDead old %v new %v", s.IsDead("phoenix", oldInc), s.IsDead("phoenix", reborn.Info().Incarnation))
	}
}

// TestMemberRejoin: Rejoin of a fenced member cleans up its registration
// and joins at once as a new incarnation with the same configuration.
func TestMemberRejoin(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	prefix := testPrefix(t)
	cfg := cluster.Config{Prefix: prefix, SiloID: "rejoiner", Address: "10.0.0.3:7000", GatewayAddress: "10.0.0.3:7001",
		GrainTypes: []string{"bank.Account"}, TTL: 2 * time.Second}
	m, p := fenceByPartition(t, cfg)
	p.on.Store(false) // etcd reachable again

	start := time.Now()
	next, err := m.Rejoin(ctx)
	if err != nil {
		t.Fatalf("Rejoin: %v", err)
	}
	t.Cleanup(func() { next.Leave(testCtx(t)) }) //nolint:errcheck // best-effort cleanup
	t.Logf("rejoined in %v", time.Since(start))
	if time.Since(start) > time.Second {
		t.Errorf("Rejoin took %v; it should not wait for the old lease to expire", time.Since(start))
	}
	info, old := next.Info(), m.Info()
	if info.Incarnation <= old.Incarnation || info.Status != cluster.StatusActive || info.Address != old.Address ||
		info.GatewayAddress != old.GatewayAddress || !slices.Equal(info.GrainTypes, old.GrainTypes) || next.Fenced() {
		t.Errorf("rejoined as %+v, was %+v", info, old)
	}
	if !errors.Is(m.Err(), cluster.ErrFenced) {
		t.Errorf("the old member's Err changed to %v", m.Err())
	}
	if _, err := next.Rejoin(ctx); err == nil || !strings.Contains(err.Error(), "still live") {
		t.Errorf("Rejoin of a live member: %v", err)
	}
}

// TestJoinWaitForIDLiveHolder: WaitForID does not wait forever for an id
// that a live silo holds: after the holder's lease TTL (+2 s) it fails.
func TestJoinWaitForIDLiveHolder(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	cli := newClient(t)
	cfg := cluster.Config{Prefix: testPrefix(t), SiloID: "taken", TTL: 2 * time.Second}
	join(t, cli, cfg)
	cfg.WaitForID = true
	start := time.Now()
	_, err := cluster.Join(ctx, cli, cfg)
	took := time.Since(start)
	t.Logf("gave up after %v: %v", took, err)
	if !errors.Is(err, cluster.ErrSiloIDInUse) || !strings.Contains(err.Error(), "live silo") {
		t.Fatalf("Join with WaitForID of a live silo's id: %v, want ErrSiloIDInUse", err)
	}
	if took < cfg.TTL || took > cfg.TTL+3*time.Second {
		t.Errorf("gave up after %v, want about TTL + 2 s", took)
	}
}
