package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/granary-rt/granary/runtime/cluster"
	"github.com/granary-rt/granary/runtime/etcdembed"
)

func watchView(t *testing.T, cli *clientv3.Client, prefix string, opts ...cluster.ViewOption) *cluster.View {
	t.Helper()
	v, err := cluster.WatchView(testCtx(t), cli, prefix, opts...)
	if err != nil {
		t.Fatalf("WatchView: %v", err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// waitView waits up to within for cond to hold in v.
func waitView(t *testing.T, v *cluster.View, within time.Duration, what string, cond func(*cluster.Snapshot) bool) *cluster.Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	s, err := v.WaitFor(ctx, cond)
	if err != nil {
		t.Fatalf("view never showed %s: %v\nlast snapshot: %s", what, err, dump(s))
	}
	return s
}

func dump(s *cluster.Snapshot) string {
	if s == nil {
		return "<nil>"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "version %d:", s.Version)
	for _, i := range s.Silos {
		fmt.Fprintf(&b, " %s/%d=%s", i.SiloID, i.Incarnation, i.Status)
	}
	return b.String()
}

func statusIs(id string, want cluster.Status) func(*cluster.Snapshot) bool {
	return func(s *cluster.Snapshot) bool {
		info, ok := s.Get(id)
		return ok && info.Status == want
	}
}

func ids(silos []cluster.SiloInfo) []string {
	out := make([]string, len(silos))
	for i, s := range silos {
		out[i] = s.SiloID
	}
	return out
}

// versionRecorder follows v from its current snapshot and records every
// version it observes, until the test ends.
func versionRecorder(t *testing.T, v *cluster.View) func() []int64 {
	var (
		mu       sync.Mutex
		versions []int64
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			s := v.Current()
			mu.Lock()
			if len(versions) == 0 || versions[len(versions)-1] != s.Version {
				versions = append(versions, s.Version)
			}
			mu.Unlock()
			select {
			case <-s.Changed():
			case <-v.Done():
				return
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return func() []int64 {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(versions)
	}
}

// TestViewLifecycle: the view follows joins, status changes and Leave, and
// its helpers filter and sort as documented.
func TestViewLifecycle(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	cli := newClient(t)
	prefix := testPrefix(t)
	core, logs := observer.New(zap.InfoLevel)
	v := watchView(t, cli, prefix, cluster.WithViewLogger(zap.New(core)))
	versions := versionRecorder(t, v)

	s0 := v.Current()
	if s0 == nil || s0.Version <= 0 || len(s0.Silos) != 0 || len(s0.Active()) != 0 || v.Err() != nil {
		t.Fatalf("empty cluster: snapshot %s, Err %v", dump(s0), v.Err())
	}

	// Joined out of id order; the view sorts.
	b := join(t, cli, cluster.Config{Prefix: prefix, SiloID: "b", Address: "10.0.0.2:7000", GrainTypes: []string{"bank.Ledger"}})
	a := join(t, cli, cluster.Config{Prefix: prefix, SiloID: "a", Address: "10.0.0.1:7000", GatewayAddress: "10.0.0.1:7001",
		GrainTypes: []string{"bank.Account", "bank.Ledger", "bank.Rates"}, StatelessTypes: []string{"bank.Rates"}})
	s := waitView(t, v, 5*time.Second, "2 active silos", func(s *cluster.Snapshot) bool { return len(s.Active()) == 2 })
	if got := ids(s.Active()); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("Active = %v, want [a b]", got)
	}
	if got := ids(s.Hosting("bank.Ledger")); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("Hosting(bank.Ledger) = %v", got)
	}
	if got := ids(s.Hosting("bank.Account")); !slices.Equal(got, []string{"a"}) {
		t.Errorf("Hosting(bank.Account) = %v", got)
	}
	if got := s.Hosting("bank.Nothing"); len(got) != 0 {
		t.Errorf("Hosting(unknown type) = %v", got)
	}
	if !s.StatelessWorker("bank.Rates") || s.StatelessWorker("bank.Ledger") || s.StatelessWorker("bank.Nothing") {
		t.Errorf("StatelessWorker: bank.Rates %v, bank.Ledger %v, unknown %v; want true, false, false",
			s.StatelessWorker("bank.Rates"), s.StatelessWorker("bank.Ledger"), s.StatelessWorker("bank.Nothing"))
	}
	if got := s.Gateways(); len(got) != 1 || got[0].SiloID != "a" || got[0].GatewayAddress != "10.0.0.1:7001" {
		t.Errorf("Gateways = %+v", got)
	}
	ai, ok := s.Get("a")
	if want := a.Info(); !ok || ai.Incarnation != want.Incarnation || ai.Lease() != a.LeaseID() || ai.Address != want.Address ||
		!slices.Equal(ai.GrainTypes, want.GrainTypes) || !slices.Equal(ai.StatelessTypes, want.StatelessTypes) || !ai.StartedAt.Equal(want.StartedAt) {
		t.Errorf("Get(a) = %+v, %v; member says %+v", ai, ok, want)
	}
	if _, ok := s.Get("nobody"); ok {
		t.Error("Get(unknown) found something")
	}
	if s.IsDead("a", ai.Incarnation) || s.IsDead("b", b.Info().Incarnation) {
		t.Error("IsDead reports a registered silo dead")
	}
	if !s.IsDead("a", ai.Incarnation-1) || !s.IsDead("nobody", s.Version) {
		t.Error("IsDead: an incarnation that is not registered at or before Version must count as dead")
	}
	if s.IsDead("nobody", s.Version+1) {
		t.Error("IsDead: an incarnation newer than the snapshot must not count as dead")
	}

	// A view started now loads the same state with its Get.
	late := watchView(t, cli, prefix)
	if ls := late.Current(); ls.Version < s.Version || !slices.EqualFunc(ls.Silos, s.Silos, func(x, y cluster.SiloInfo) bool {
		return x.SiloID == y.SiloID && x.Incarnation == y.Incarnation && x.Status == y.Status
	}) {
		t.Errorf("a view started later: %s; the first view: %s", dump(ls), dump(s))
	}

	// Joining (as a silo that is not serving yet) and back to Active.
	if err := a.SetStatus(ctx, cluster.StatusJoining); err != nil {
		t.Fatal(err)
	}
	s = waitView(t, v, 5*time.Second, "a joining", statusIs("a", cluster.StatusJoining))
	if got := ids(s.Active()); !slices.Equal(got, []string{"b"}) || len(s.Gateways()) != 0 || len(s.Hosting("bank.Account")) != 0 {
		t.Errorf("while a is joining: Active %v, Gateways %v, Hosting(bank.Account) %v", got, s.Gateways(), s.Hosting("bank.Account"))
	}
	if err := a.SetStatus(ctx, cluster.StatusActive); err != nil {
		t.Fatal(err)
	}
	waitView(t, v, 5*time.Second, "a active again", statusIs("a", cluster.StatusActive))

	// ShuttingDown, then Leave: Dead, kept for a while.
	if err := a.SetStatus(ctx, cluster.StatusShuttingDown); err != nil {
		t.Fatal(err)
	}
	s = waitView(t, v, 5*time.Second, "a shutting down", statusIs("a", cluster.StatusShuttingDown))
	if got := ids(s.Active()); !slices.Equal(got, []string{"b"}) {
		t.Errorf("Active while a shuts down = %v", got)
	}
	if s.IsDead("a", ai.Incarnation) {
		t.Error("a silo shutting down counts as dead")
	}
	if err := a.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	s = waitView(t, v, 5*time.Second, "a dead", statusIs("a", cluster.StatusDead))
	if got := ids(s.Silos); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("Silos after a left = %v, want the dead entry kept", got)
	}
	if dead, _ := s.Get("a"); dead.Incarnation != ai.Incarnation || dead.Address != ai.Address {
		t.Errorf("dead entry %+v lost what the view knew", dead)
	}
	if !s.IsDead("a", ai.Incarnation) || s.IsDead("b", b.Info().Incarnation) {
		t.Errorf("IsDead after a left: a %v, b %v", s.IsDead("a", ai.Incarnation), s.IsDead("b", b.Info().Incarnation))
	}
	if n := logs.FilterMessage("cluster: silo left").FilterField(zap.String("silo", "a")).Len(); n != 1 {
		t.Errorf("%d 'silo left' logs for a, want 1", n)
	}
	if n := logs.FilterMessage("cluster: silo joined").Len(); n != 2 {
		t.Errorf("%d 'silo joined' logs, want 2", n)
	}

	got := versions()
	t.Logf("versions observed: %v", got)
	if len(got) < 3 {
		t.Errorf("observed %d versions, want several", len(got))
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Errorf("version went from %d to %d", got[i-1], got[i])
		}
	}

	// Close: the goroutine exits, Current keeps the last snapshot.
	last := v.Current()
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-v.Done():
	default:
		t.Fatal("Done open after Close")
	}
	if !errors.Is(v.Err(), cluster.ErrViewClosed) || v.Current() != last {
		t.Errorf("after Close: Err %v, snapshot changed %v", v.Err(), v.Current() != last)
	}
	if _, err := v.WaitFor(ctx, func(*cluster.Snapshot) bool { return false }); !errors.Is(err, cluster.ErrViewClosed) {
		t.Errorf("WaitFor on a closed view: %v", err)
	}
	v.Close() // idempotent
}

// TestViewReadsDoNotAllocate: what routing does per call costs no
// allocation.
func TestViewReadsDoNotAllocate(t *testing.T) {
	cli := newClient(t)
	prefix := testPrefix(t)
	v := watchView(t, cli, prefix)
	join(t, cli, cluster.Config{Prefix: prefix, SiloID: "x", GrainTypes: []string{"t"}, GatewayAddress: "gw"})
	waitView(t, v, 5*time.Second, "x active", statusIs("x", cluster.StatusActive))
	allocs := testing.AllocsPerRun(1000, func() {
		s := v.Current()
		if len(s.Active()) != 1 || len(s.Hosting("t")) != 1 || len(s.Gateways()) != 1 || s.IsDead("x", s.Silos[0].Incarnation) {
			t.Fatal("unexpected snapshot")
		}
		if _, ok := s.Get("x"); !ok {
			t.Fatal("Get(x) failed")
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per routing read, want 0", allocs)
	}
}

func TestWatchViewRejects(t *testing.T) {
	ctx := testCtx(t)
	if _, err := cluster.WatchView(ctx, nil, "/g/"); err == nil {
		t.Error("WatchView(nil client): no error")
	}
	if _, err := cluster.WatchView(ctx, newClient(t), "/g"); err == nil || !strings.HasPrefix(err.Error(), "cluster: ") {
		t.Errorf("WatchView(bad prefix): %v", err)
	}
}

// TestViewWaitForContext: WaitFor gives up when its context ends, and a
// view stops when the context given to WatchView ends.
func TestViewWaitForContext(t *testing.T) {
	t.Parallel()
	cli := newClient(t)
	vctx, vcancel := context.WithCancel(context.Background())
	v, err := cluster.WatchView(vctx, cli, testPrefix(t))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := v.WaitFor(ctx, func(*cluster.Snapshot) bool { return false }); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitFor past its deadline: %v", err)
	}
	vcancel()
	select {
	case <-v.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("view still running 5 s after its context ended")
	}
	if !errors.Is(v.Err(), cluster.ErrViewClosed) {
		t.Errorf("Err after the context ended: %v", v.Err())
	}

	// Closing the etcd client stops a view too.
	own := newClient(t)
	v2 := watchView(t, own, testPrefix(t))
	own.Close()
	select {
	case <-v2.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("view still running 5 s after its etcd client was closed")
	}
	if err := v2.Err(); !errors.Is(err, cluster.ErrViewClosed) || !strings.Contains(err.Error(), "client closed") {
		t.Errorf("Err after the client was closed: %v", err)
	}
}

// TestViewLeaseExpiry: a member that stops renewing (Close, as in a crash)
// shows as Dead once etcd expires its lease: within one TTL plus etcd's
// expiry check interval.
func TestViewLeaseExpiry(t *testing.T) {
	t.Parallel()
	cli := newClient(t)
	prefix := testPrefix(t)
	core, logs := observer.New(zap.InfoLevel)
	v := watchView(t, cli, prefix, cluster.WithViewLogger(zap.New(core)))
	m := join(t, cli, cluster.Config{Prefix: prefix, SiloID: "crasher", TTL: 2 * time.Second})
	inc := m.Info().Incarnation
	waitView(t, v, 5*time.Second, "crasher active", statusIs("crasher", cluster.StatusActive))
	m.Close()
	closed := time.Now()
	const expirySlack = time.Second // etcd checks lease expiry every 500 ms
	s := waitView(t, v, m.TTL()+expirySlack, "crasher dead", statusIs("crasher", cluster.StatusDead))
	t.Logf("dead in the view %v after Close (TTL %v)", time.Since(closed), m.TTL())
	if !s.IsDead("crasher", inc) || len(s.Active()) != 0 {
		t.Errorf("after expiry: %s", dump(s))
	}
	if logs.FilterMessageSnippet("silo dead").FilterField(zap.String("silo", "crasher")).FilterLevelExact(zap.WarnLevel).Len() != 1 {
		t.Errorf("no warning about the silo dying: %v", logs.All())
	}
}

// TestViewDeadRetention: dead entries are bounded in number and age; IsDead
// does not depend on them.
func TestViewDeadRetention(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	cli := newClient(t)
	prefix := testPrefix(t)
	byCount := watchView(t, cli, prefix, cluster.WithDeadRetention(time.Hour, 2))
	byAge := watchView(t, cli, prefix, cluster.WithDeadRetention(100*time.Millisecond, 100))
	var incs []int64
	for _, id := range []string{"d1", "d2", "d3"} {
		m := join(t, cli, cluster.Config{Prefix: prefix, SiloID: id})
		incs = append(incs, m.Info().Incarnation)
		if err := m.Leave(ctx); err != nil {
			t.Fatal(err)
		}
	}
	s := waitView(t, byCount, 5*time.Second, "d3 dead", statusIs("d3", cluster.StatusDead))
	if got := ids(s.Silos); !slices.Equal(got, []string{"d2", "d3"}) {
		t.Errorf("with a limit of 2 dead entries: Silos = %v, want [d2 d3]", got)
	}
	if !s.IsDead("d1", incs[0]) {
		t.Error("IsDead(d1) false once its entry was dropped")
	}

	waitView(t, byAge, 5*time.Second, "d3 dead", statusIs("d3", cluster.StatusDead))
	time.Sleep(150 * time.Millisecond)
	join(t, cli, cluster.Config{Prefix: prefix, SiloID: "fresh"})
	s = waitView(t, byAge, 5*time.Second, "fresh active", statusIs("fresh", cluster.StatusActive))
	if got := ids(s.Silos); !slices.Equal(got, []string{"fresh"}) {
		t.Errorf("dead entries older than the retention survived the next change: %v", got)
	}
	for i, id := range []string{"d1", "d2", "d3"} {
		if !s.IsDead(id, incs[i]) {
			t.Errorf("IsDead(%s) false once its entry was dropped", id)
		}
	}
}

// TestViewConsistentSnapshots: readers racing with a busy writer always see
// internally consistent snapshots and never a version going backwards.
func TestViewConsistentSnapshots(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	cli := newClient(t)
	prefix := testPrefix(t)
	v := watchView(t, cli, prefix)

	stop := make(chan struct{})
	var (
		wg    sync.WaitGroup
		reads atomic.Int64
		bad   atomic.Pointer[string]
	)
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		bad.CompareAndSwap(nil, &msg)
	}
	for range 4 {
		wg.Go(func() {
			var last int64
			for {
				select {
				case <-stop:
					return
				default:
				}
				runtime.Gosched() // leave the etcd server and the writer some CPU
				s := v.Current()
				reads.Add(1)
				if s.Version < last {
					fail("version went back from %d to %d", last, s.Version)
				}
				last = s.Version
				if !slices.IsSortedFunc(s.Silos, func(a, b cluster.SiloInfo) int { return strings.Compare(a.SiloID, b.SiloID) }) {
					fail("Silos not sorted: %s", dump(s))
				}
				active := 0
				for _, info := range s.Silos {
					if got, ok := s.Get(info.SiloID); !ok || got.Incarnation != info.Incarnation || got.Status != info.Status {
						fail("Get(%s) disagrees with Silos in %s", info.SiloID, dump(s))
					}
					if info.Status == cluster.StatusActive {
						active++
					}
				}
				if len(s.Active()) != active || len(s.Hosting("t")) != active {
					fail("Active %d, Hosting %d, want %d in %s", len(s.Active()), len(s.Hosting("t")), active, dump(s))
				}
				for _, info := range s.Active() {
					if info.Status != cluster.StatusActive {
						fail("Active holds %s %s", info.SiloID, info.Status)
					}
				}
			}
		})
	}

	var members []*cluster.Member
	for i := range 3 {
		members = append(members, join(t, cli, cluster.Config{Prefix: prefix, SiloID: fmt.Sprintf("s%d", i), GrainTypes: []string{"t"}}))
	}
	for i := range 30 {
		st := cluster.StatusActive
		if i%2 == 0 {
			st = cluster.StatusShuttingDown
		}
		if err := members[i%3].SetStatus(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range members {
		if err := m.Leave(ctx); err != nil {
			t.Fatal(err)
		}
	}
	s := waitView(t, v, 5*time.Second, "all dead", func(s *cluster.Snapshot) bool {
		return len(s.Silos) == 3 && len(s.Active()) == 0 && s.Silos[0].Status == cluster.StatusDead &&
			s.Silos[1].Status == cluster.StatusDead && s.Silos[2].Status == cluster.StatusDead
	})
	close(stop)
	wg.Wait()
	t.Logf("%d reads, final %s", reads.Load(), dump(s))
	if msg := bad.Load(); msg != nil {
		t.Fatal(*msg)
	}
}

// TestViewSurvivesEtcdRestart runs its own etcd with a fixed data dir and
// client address, restarts it under a view, and checks that the view
// serves its last snapshot while etcd is down and catches up afterwards.
func TestViewSurvivesEtcdRestart(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ecfg := etcdembed.Config{Dir: t.TempDir(), ClientAddr: l.Addr().String()}
	l.Close()
	srv, err := etcdembed.Start(ctx, ecfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   srv.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		// Reconnect quickly once etcd is back, instead of after gRPC's
		// default backoff of up to two minutes.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, MaxDelay: 200 * time.Millisecond},
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })

	prefix := testPrefix(t)
	core, logs := observer.New(zap.InfoLevel)
	v := watchView(t, cli, prefix, cluster.WithViewLogger(zap.New(core)), cluster.WithViewRetry(50*time.Millisecond, 500*time.Millisecond))
	versions := versionRecorder(t, v)
	// The embedded etcd's Close waits up to its request timeout (7 s) per
	// server for open streams such as the view's watch to end, and keeps
	// expiring leases meanwhile: this silo's TTL outlasts that.
	join(t, cli, cluster.Config{Prefix: prefix, SiloID: "before", TTL: 20 * time.Second})
	before := waitView(t, v, 5*time.Second, "'before' active", statusIs("before", cluster.StatusActive))

	closing := time.Now()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("etcd closed in %v", time.Since(closing))
	time.Sleep(300 * time.Millisecond)
	if s := v.Current(); s.Version != before.Version || !statusIs("before", cluster.StatusActive)(s) {
		t.Errorf("while etcd is down the view changed to %s", dump(s))
	}

	restarted := time.Now()
	if srv, err = etcdembed.Start(ctx, ecfg); err != nil {
		t.Fatal(err)
	}
	t.Logf("etcd restarted in %v", time.Since(restarted))
	after := join(t, cli, cluster.Config{Prefix: prefix, SiloID: "after", TTL: 5 * time.Second})
	t.Logf("joined 'after' %v after the restart", time.Since(restarted))
	s := waitView(t, v, 10*time.Second, "'after' active", func(s *cluster.Snapshot) bool {
		info, ok := s.Get("after")
		return ok && info.Status == cluster.StatusActive && info.Incarnation == after.Info().Incarnation
	})
	t.Logf("view caught up %v after the restart: %s; Err %v", time.Since(restarted), dump(s), v.Err())
	if s.Version <= before.Version || after.Info().Incarnation <= before.Version {
		t.Errorf("version %d after the restart, %d before", s.Version, before.Version)
	}
	if !statusIs("before", cluster.StatusActive)(s) {
		t.Errorf("the silo that lived through the restart is not active: %s", dump(s))
	}
	if v.Err() != nil {
		t.Errorf("Err after catching up: %v", v.Err())
	}
	got := versions()
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Errorf("version went from %d to %d: %v", got[i-1], got[i], got)
		}
	}
	t.Logf("watch failures logged: %d, reloads: %d", logs.FilterMessageSnippet("watch failed").Len(), logs.FilterMessageSnippet("view reloaded").Len())
}

// watchCutter breaks a client's etcd watch streams on demand, as a network
// failure would: cut fails the open streams with the given code
// (Unavailable: the client resumes them by itself; anything else ends the
// watch), and new ones wait until heal. With gets, reads (Range) fail too
// while cut. Other requests pass.
type watchCutter struct {
	mu      sync.Mutex
	healed  chan struct{} // non-nil while cut
	code    codes.Code
	gets    bool
	streams []*cutStream
}

type cutStream struct {
	grpc.ClientStream
	code   atomic.Uint32 // non-zero: cut, fail with it
	cancel context.CancelFunc
}

func (s *cutStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if code := codes.Code(s.code.Load()); err != nil && code != codes.OK {
		return status.Error(code, "test: watch stream cut")
	}
	return err
}

func (c *watchCutter) options() []grpc.DialOption {
	stream := grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if method != "/etcdserverpb.Watch/Watch" {
			return streamer(ctx, desc, cc, method, opts...)
		}
		for {
			c.mu.Lock()
			healed := c.healed
			c.mu.Unlock()
			if healed == nil {
				break
			}
			select {
			case <-healed:
			case <-ctx.Done():
				return nil, status.FromContextError(ctx.Err()).Err()
			}
		}
		sctx, cancel := context.WithCancel(ctx)
		cs, err := streamer(sctx, desc, cc, method, opts...)
		if err != nil {
			cancel()
			return nil, err
		}
		s := &cutStream{ClientStream: cs, cancel: cancel}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.healed != nil { // cut while it was being opened
			s.code.Store(uint32(c.code))
			cancel()
		} else {
			c.streams = append(c.streams, s)
		}
		return s, nil
	})
	unary := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		c.mu.Lock()
		fail := c.healed != nil && c.gets && method == "/etcdserverpb.KV/Range"
		c.mu.Unlock()
		if fail {
			return status.Error(codes.FailedPrecondition, "test: reads cut")
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	return []grpc.DialOption{stream, unary}
}

func (c *watchCutter) cut(code codes.Code, gets bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.healed, c.code, c.gets = make(chan struct{}), code, gets
	for _, s := range c.streams {
		s.code.Store(uint32(code))
		s.cancel()
	}
	c.streams = nil
}

func (c *watchCutter) heal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	close(c.healed)
	c.healed = nil
}

// TestViewRetriesReload: when the watch ends and etcd cannot be read, the
// view reports the failure in Err, keeps serving its last snapshot, and
// retries the reload with backoff until it succeeds.
func TestViewRetriesReload(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	cli := newClient(t)
	var cutter watchCutter
	vcli := newClient(t, cutter.options()...)
	prefix := testPrefix(t)
	core, logs := observer.New(zap.InfoLevel)
	v := watchView(t, vcli, prefix, cluster.WithViewLogger(zap.New(core)), cluster.WithViewRetry(20*time.Millisecond, 100*time.Millisecond))
	a := join(t, cli, cluster.Config{Prefix: prefix, SiloID: "a"})
	before := waitView(t, v, 5*time.Second, "a active", statusIs("a", cluster.StatusActive))

	cutter.cut(codes.FailedPrecondition, true)
	deadline := time.Now().Add(5 * time.Second)
	for v.Err() == nil {
		if time.Now().After(deadline) {
			t.Fatal("Err still nil 5 s after the watch was cut")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("Err while cut: %v", v.Err())
	if err := a.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	join(t, cli, cluster.Config{Prefix: prefix, SiloID: "b"})
	time.Sleep(300 * time.Millisecond)
	if v.Current() != before || v.Err() == nil {
		t.Fatalf("while cut: snapshot %s (was %s), Err %v", dump(v.Current()), dump(before), v.Err())
	}
	if n := logs.FilterMessageSnippet("reload failed").Len(); n < 2 {
		t.Errorf("%d failed reloads logged in 300 ms, want several", n)
	}
	cutter.heal()
	s := waitView(t, v, 5*time.Second, "a dead and b active", func(s *cluster.Snapshot) bool {
		return statusIs("a", cluster.StatusDead)(s) && statusIs("b", cluster.StatusActive)(s)
	})
	if v.Err() != nil {
		t.Errorf("Err after recovery: %v", v.Err())
	}
	t.Logf("recovered: %s after %d failed reloads", dump(s), logs.FilterMessageSnippet("reload failed").Len())
}

// TestViewRecoversFromCompaction cuts the view's watch, changes the
// membership, compacts etcd past the view's revision, and lets the watch
// resume: etcd refuses it (compacted), and the view reloads and catches up.
func TestViewRecoversFromCompaction(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	cli := newClient(t)
	var cutter watchCutter
	vcli := newClient(t, cutter.options()...)
	prefix := testPrefix(t)
	core, logs := observer.New(zap.InfoLevel)
	v := watchView(t, vcli, prefix, cluster.WithViewLogger(zap.New(core)))
	versions := versionRecorder(t, v)
	gone := join(t, cli, cluster.Config{Prefix: prefix, SiloID: "gone"})
	stays := join(t, cli, cluster.Config{Prefix: prefix, SiloID: "stays"})
	before := waitView(t, v, 5*time.Second, "2 active", func(s *cluster.Snapshot) bool { return len(s.Active()) == 2 })

	cutter.cut(codes.Unavailable, false)
	if err := gone.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	if err := stays.SetStatus(ctx, cluster.StatusShuttingDown); err != nil {
		t.Fatal(err)
	}
	joined := join(t, cli, cluster.Config{Prefix: prefix, SiloID: "joined", GatewayAddress: "gw:1"})
	resp, err := cli.Get(ctx, "compact-me")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	if s := v.Current(); s.Version != before.Version {
		t.Fatalf("the view changed while its watch was cut: %s", dump(s))
	}
	cutter.heal()

	s := waitView(t, v, 10*time.Second, "the changes made while cut", func(s *cluster.Snapshot) bool {
		return statusIs("gone", cluster.StatusDead)(s) && statusIs("stays", cluster.StatusShuttingDown)(s) && statusIs("joined", cluster.StatusActive)(s)
	})
	if s.Version < resp.Header.Revision {
		t.Errorf("version %d after reload, below the compacted revision %d", s.Version, resp.Header.Revision)
	}
	if !s.IsDead("gone", gone.Info().Incarnation) || len(s.Gateways()) != 1 || s.Gateways()[0].SiloID != "joined" || joined.Info().Incarnation > s.Version {
		t.Errorf("after reload: %s", dump(s))
	}
	// The watch resumes too: a change after the reload arrives.
	if err := stays.SetStatus(ctx, cluster.StatusActive); err != nil {
		t.Fatal(err)
	}
	waitView(t, v, 5*time.Second, "stays active again", statusIs("stays", cluster.StatusActive))

	failures := logs.FilterMessageSnippet("membership watch failed")
	if failures.Len() == 0 || !strings.Contains(fmt.Sprint(failures.All()[0].ContextMap()["error"]), "compacted") {
		t.Errorf("no log of the watch failing on compaction: %v", logs.All())
	}
	if logs.FilterMessageSnippet("view reloaded").Len() == 0 {
		t.Error("no log of the reload")
	}
	// The view last saw "gone" Active (its ShuttingDown came during the
	// cut), so the reload reports it as having died.
	if n := logs.FilterMessageSnippet("silo dead").FilterField(zap.String("silo", "gone")).
		FilterField(zap.String("how", "vanished while the view was not watching")).Len(); n != 1 {
		t.Errorf("%d logs of the reload finding 'gone' dead, want 1: %v", n, logs.All())
	}
	if v.Err() != nil {
		t.Errorf("Err after recovery: %v", v.Err())
	}
	got := versions()
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Errorf("version went from %d to %d: %v", got[i-1], got[i], got)
		}
	}
}
