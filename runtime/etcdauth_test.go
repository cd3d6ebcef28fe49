package runtime_test

// Tests against an etcd with authentication enabled: the roles the README
// documents for a cluster's silos and clients, and nothing more.

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/cluster"
	"github.com/granary-rt/granary/runtime/etcdembed"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/runtimetest"
)

// authEtcd is an etcd with authentication on, and the users the README's
// etcdctl commands create for one cluster.
type authEtcd struct {
	endpoints []string
	cluster   string
	silo      runtime.EtcdConfig // role: read-write on the cluster's prefix
	client    runtime.EtcdConfig // role: read on the cluster's membership prefix
}

// startAuthEtcd starts an embedded etcd of its own (auth is server-wide,
// so not the package's shared one), creates the roles and users of
// cluster with the clientv3 Auth API, the same operations as the README's
// etcdctl commands, and enables authentication.
func startAuthEtcd(t *testing.T, clusterName string) *authEtcd {
	t.Helper()
	ctx := ctxT(t)
	srv, err := etcdembed.Start(ctx, etcdembed.Config{BcryptCost: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	a := &authEtcd{endpoints: srv.Endpoints(), cluster: clusterName}
	a.silo = runtime.EtcdConfig{Endpoints: a.endpoints, Username: clusterName + "-silo", Password: "silo-secret"}
	a.client = runtime.EtcdConfig{Endpoints: a.endpoints, Username: clusterName + "-client", Password: "client-secret"}
	cli, err := clientv3.New(clientv3.Config{Endpoints: a.endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	prefix := runtime.ClusterPrefix(clusterName)
	members := cluster.MembershipPrefix(prefix)
	steps := []struct {
		what string
		do   func() error
	}{
		{"user add root", func() error { _, err := cli.UserAdd(ctx, "root", "root-secret"); return err }},
		{"user grant-role root root", func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err }},
		{"role add silo", func() error { _, err := cli.RoleAdd(ctx, clusterName+"-silo"); return err }},
		{"role grant-permission silo readwrite --prefix " + prefix, func() error {
			_, err := cli.RoleGrantPermission(ctx, clusterName+"-silo", prefix, clientv3.GetPrefixRangeEnd(prefix),
				clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		}},
		{"role add client", func() error { _, err := cli.RoleAdd(ctx, clusterName+"-client"); return err }},
		{"role grant-permission client read --prefix " + members, func() error {
			_, err := cli.RoleGrantPermission(ctx, clusterName+"-client", members, clientv3.GetPrefixRangeEnd(members),
				clientv3.PermissionType(clientv3.PermRead))
			return err
		}},
		{"user add silo", func() error { _, err := cli.UserAdd(ctx, a.silo.Username, a.silo.Password); return err }},
		{"user grant-role silo", func() error { _, err := cli.UserGrantRole(ctx, a.silo.Username, clusterName+"-silo"); return err }},
		{"user add client", func() error { _, err := cli.UserAdd(ctx, a.client.Username, a.client.Password); return err }},
		{"user grant-role client", func() error {
			_, err := cli.UserGrantRole(ctx, a.client.Username, clusterName+"-client")
			return err
		}},
		{"auth enable", func() error { _, err := cli.AuthEnable(ctx); return err }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("etcd %s: %v", s.what, err)
		}
	}
	return a
}

// etcdAs returns an etcd client logged in with cfg's user.
func etcdAs(t *testing.T, cfg runtime.EtcdConfig) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, Username: cfg.Username, Password: cfg.Password,
		DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Silos with the silo role (no root) run everything they keep in etcd:
// membership and its lease, the directory, etcd storage, reminders and
// their progress, and a graceful leave. A client whose role can only read
// the membership calls grains; etcd refuses its writes to the directory and
// to the membership, its reads of the directory, and revoking a silo's
// lease.
func TestEtcdAuthRoles(t *testing.T) {
	a := startAuthEtcd(t, "prod")
	obs := testgrains.NewObserver()
	c := runtimetest.NewCluster(t, 2, runtimetest.Options{
		Config:   runtime.Config{Cluster: a.cluster, Etcd: a.silo, ReminderMinPeriod: 50 * time.Millisecond, ReminderProgressInterval: 50 * time.Millisecond},
		Register: registerTestGrains(obs),
	})
	ctx := ctxT(t)

	// Silos: directory, lease-bound registration and etcd storage.
	for i := range 10 {
		if n, err := testgrains.NewCounterRef(c.Client(), fmt.Sprint("s", i)).AddDurable(ctx, 5); err != nil || n != 5 {
			t.Fatalf("AddDurable through a silo: %d, %v", n, err)
		}
	}
	// Reminders: the table, notices, ticks and progress records.
	clock := testgrains.NewClockRef(c.Client(), "reminded")
	if err := clock.Remind(ctx, "beat", 0, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	var ticks int
	runtimetest.Eventually(t, 20*time.Second, func() bool {
		got, err := clock.Counts(ctx)
		ticks = got.Ticks["beat"]
		return err == nil && ticks >= 3
	}, "reminder ticks with the silo role: %d", ticks)
	if err := clock.Forget(ctx, "beat"); err != nil {
		t.Fatal(err)
	}

	// The read-only client calls grains, old and new.
	client, err := runtime.Connect(ctx, runtime.ClientConfig{Cluster: a.cluster, Etcd: a.client})
	if err != nil {
		t.Fatalf("Connect with the read-only client role: %v", err)
	}
	defer client.Close()
	snap, err := client.View().WaitFor(ctx, func(s *cluster.Snapshot) bool { return len(s.Active()) == 2 })
	if err != nil {
		t.Fatalf("client never saw 2 active silos: %v", err)
	}
	for i := range 10 {
		if n, err := testgrains.NewCounterRef(client, fmt.Sprint("s", i)).Add(ctx, 1); err != nil || n != 6 {
			t.Fatalf("Add through the read-only client: %d, %v; want 6", n, err)
		}
		if n, err := testgrains.NewCounterRef(client, fmt.Sprint("c", i)).Add(ctx, 1); err != nil || n != 1 {
			t.Fatalf("Add of a new grain through the read-only client: %d, %v; want 1", n, err)
		}
	}

	// What the client's role may not do.
	raw := etcdAs(t, a.client)
	prefix := runtime.ClusterPrefix(a.cluster)
	dirKey := prefix + "dir/" + testgrains.CounterType.Name + "/s0"
	silo := snap.Active()[0]
	for _, tc := range []struct {
		what string
		do   func() error
	}{
		{"write a directory entry", func() error { _, err := raw.Put(ctx, dirKey, "forged"); return err }},
		{"delete a directory entry", func() error { _, err := raw.Delete(ctx, dirKey); return err }},
		{"read the directory", func() error {
			_, err := raw.Get(ctx, prefix+"dir/", clientv3.WithPrefix())
			return err
		}},
		{"write the membership", func() error {
			_, err := raw.Put(ctx, cluster.MembershipPrefix(prefix)+"forged", "x")
			return err
		}},
		{"delete a silo's registration", func() error {
			_, err := raw.Delete(ctx, cluster.MembershipPrefix(prefix)+silo.SiloID)
			return err
		}},
		{"revoke a silo's lease", func() error { _, err := raw.Revoke(ctx, silo.Lease()); return err }},
		{"read grain state", func() error { _, err := raw.Get(ctx, prefix+"state/", clientv3.WithPrefix()); return err }},
	} {
		if err := tc.do(); !errors.Is(err, rpctypes.ErrPermissionDenied) {
			t.Errorf("the client role could %s: err = %v, want permission denied", tc.what, err)
		}
	}
	if resp, err := raw.Get(ctx, cluster.MembershipPrefix(prefix), clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != 2 {
		t.Errorf("the client role reading the membership: %v, %v; want 2 silos", resp, err)
	}

	// Nothing of it reached the silos: the grains still answer, from the
	// same activations.
	for i := range 10 {
		if n, err := testgrains.NewCounterRef(client, fmt.Sprint("s", i)).Get(ctx); err != nil || n != 6 {
			t.Fatalf("Get after the refused writes: %d, %v; want 6", n, err)
		}
		if got := obs.Activations(grain.ID{Type: testgrains.CounterType.Name, Key: fmt.Sprint("s", i)}); got != 1 {
			t.Fatalf("grain s%d activated %d times, want 1", i, got)
		}
	}
}

// The client role is not enough to run a silo: the roles are what keeps a
// client out of the directory, not an accident of the test.
func TestEtcdAuthClientRoleCannotRunASilo(t *testing.T) {
	a := startAuthEtcd(t, "prod")
	s, err := runtime.NewSilo(runtime.Config{Cluster: a.cluster, Etcd: a.client})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Start(ctx); err == nil {
		s.Stop(ctx)
		t.Fatal("a silo started with the client's etcd role")
	} else if !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Fatalf("Start with the client role: %v, want permission denied", err)
	}
}
