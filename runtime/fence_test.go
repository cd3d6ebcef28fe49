package runtime_test

import (
	"context"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/reminder"
	"github.com/granary-rt/granary/runtime/runtimetest"
	"github.com/granary-rt/granary/runtime/storage"
)

// gatedTable holds the first table write of one reminder name until
// released, and then for up to a second more unless its context ends
// first: a slow table write still in flight when the silo fences.
type gatedTable struct {
	reminder.Table
	name    string
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func newGatedTable(name string) *gatedTable {
	return &gatedTable{Table: reminder.NewMemory(), name: name,
		entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gatedTable) hold(ctx context.Context, name string) {
	if name != g.name {
		return
	}
	first := false
	g.once.Do(func() { first = true })
	if !first {
		return
	}
	close(g.entered)
	<-g.release
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (g *gatedTable) Upsert(ctx context.Context, e reminder.Entry) (string, error) {
	g.hold(ctx, e.Name)
	return g.Table.Upsert(ctx, e)
}

func (g *gatedTable) Remove(ctx context.Context, id grain.ID, name, etag string) (bool, error) {
	g.hold(ctx, name)
	return g.Table.Remove(ctx, id, name, etag)
}

// revokeLease revokes the lease of silo s of cluster c, as etcd would
// expire it: the silo fences itself at its next keepalive.
func revokeLease(t *testing.T, ctx context.Context, c *runtimetest.Cluster, s *runtime.Silo) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, runtime.ClusterPrefix(c.Name)+"silos/"+s.ID())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("silo key: %v, %v", resp, err)
	}
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
}

// TestReminderChangesAreFenced: a RegisterReminder or UnregisterReminder
// whose table write is still in flight when the silo fences itself must
// not change the table, and the call must not report success.
func TestReminderChangesAreFenced(t *testing.T) {
	for _, op := range []string{"register", "unregister"} {
		t.Run("op="+op, func(t *testing.T) {
			table := newGatedTable("late")
			f := start(t, 1, runtime.Config{LeaseTTL: 2 * time.Second, Reminders: table, ReminderMinPeriod: time.Millisecond})
			defer close(table.release)
			ctx := ctxT(t)
			s := f.Silos[0]
			c := testgrains.NewClockRef(f.Client(), "fenced-"+op)
			if op == "unregister" {
				if _, err := table.Table.Upsert(ctx, reminder.Entry{Grain: c.ID(), Name: "late", Start: time.Now().Add(time.Hour), Period: time.Hour}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := c.TimerTicks(ctx); err != nil {
				t.Fatal(err)
			}
			errc := make(chan error, 1)
			go func() {
				if op == "register" {
					errc <- c.Remind(ctx, "late", time.Hour, time.Hour)
				} else {
					errc <- c.Forget(ctx, "late")
				}
			}()
			<-table.entered
			revokeLease(t, ctx, f.Cluster, s)
			// The silo fenced itself and dropped the activation whose turn
			// is still inside the table write.
			runtimetest.Eventually(t, 10*time.Second, func() bool { return s.ActivationCount() == 0 },
				"the silo did not fence itself after its lease was revoked")
			table.release <- struct{}{} // let the write go on
			if err := <-errc; err == nil {
				t.Errorf("%s reported success from a fenced turn", op)
			}
			_, ok, err := table.Table.Get(ctx, c.ID(), "late")
			if err != nil {
				t.Fatal(err)
			}
			if want := op == "unregister"; ok != want {
				t.Fatalf("a fenced %s changed the reminder table (entry present: %v)", op, ok)
			}
		})
	}
}

// gatedStorage holds the first write until released, and then for up to
// 200ms more unless its context ends first: a slow storage write still in
// flight when the silo fences. (200ms ends well before the fence deadline
// of a 2s lease revoked just after a keepalive.)
type gatedStorage struct {
	*storage.Memory
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (g *gatedStorage) Write(ctx context.Context, k storage.Key, data []byte, etag string) (string, error) {
	first := false
	g.once.Do(func() { first = true })
	if first {
		close(g.entered)
		<-g.release
		t := time.NewTimer(200 * time.Millisecond)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	return g.Memory.Write(ctx, k, data, etag)
}

// TestStateWriteInFlightIsCutAtTheFence: a write-through still in flight
// when etcd reports the silo's lease gone (so the silo fences before its
// fence deadline) is cancelled, not left to land after the fence, and its
// call fails.
func TestStateWriteInFlightIsCutAtTheFence(t *testing.T) {
	st := &gatedStorage{Memory: storage.NewMemory(), entered: make(chan struct{}), release: make(chan struct{})}
	f := start(t, 1, runtime.Config{LeaseTTL: 2 * time.Second, Storage: map[string]storage.Provider{runtime.DefaultStorage: st}})
	defer close(st.release)
	ctx := ctxT(t)
	s := f.Silos[0]
	c := testgrains.NewClockRef(f.Client(), "cut")
	errc := make(chan error, 1)
	go func() { errc <- c.SetThrough(ctx, 5) }()
	<-st.entered
	revokeLease(t, ctx, f.Cluster, s)
	runtimetest.Eventually(t, 10*time.Second, func() bool { return s.ActivationCount() == 0 },
		"the silo did not fence itself after its lease was revoked")
	st.release <- struct{}{}
	if err := <-errc; err == nil {
		t.Error("a write-through in flight at the fence reported success")
	}
	data, _, err := st.Memory.Read(ctx, storage.Key{GrainType: c.ID().Type, GrainKey: c.ID().Key, State: "through"})
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != 0 {
		t.Fatalf("the write in flight at the fence landed after it (%d bytes stored)", len(data))
	}
}
