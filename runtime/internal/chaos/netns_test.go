package chaos

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test's network: one namespace holding silo 0, joined to the root
// namespace by a veth pair. Every address is on that veth pair, inside
// the test's own namespaces; nothing else is touched.
//
//	root namespace                         namespace netnsName
//	vethRoot 10.99.0.1/24 (silos 1, 2)  <->  vethNS 10.99.0.2/24 (silo 0)
//	         10.99.1.1/32 (etcd)              route 10.99.1.0/24 via 10.99.0.1
//
// Partitioning silo 0 from etcd replaces its route to etcdIP with a
// blackhole: silo 0 still reaches the other silos and clients still reach
// silo 0, but nothing it sends reaches etcd.
const (
	netnsName = "granary-chaos"
	vethRoot  = "gchaos0"
	vethNS    = "gchaos1"
	rootIP    = "10.99.0.1"
	nsIP      = "10.99.0.2"
	etcdIP    = "10.99.1.1"
	lockPath  = "/tmp/granary-chaos.lock"
)

// netns is the test's namespace and veth pair.
type netns struct {
	t    *testing.T
	lock *os.File
}

// requireRoot skips the test outside CI when it cannot create network
// namespaces, and fails it in CI (which runs as root).
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("ip"); err != nil {
			t.Fatalf("the fault-injection test needs iproute2's ip command (apt-get install -y iproute2): %v", err)
		}
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("the fault-injection test needs root to create network namespaces, and CI must run it")
	}
	t.Skip("the fault-injection test needs root (network namespaces); skipped outside CI")
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// setupNetns takes the machine-wide lock of the test's network (one run at
// a time uses these names and addresses), removes what a crashed earlier
// run left, and creates the namespace and the veth pair. t.Cleanup removes
// them again, and releases the lock.
func setupNetns(t *testing.T) *netns {
	t.Helper()
	requireRoot(t)
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			t.Fatalf("lock %s (another fault-injection run holds it?): %v", lockPath, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	n := &netns{t: t, lock: f}
	n.teardown() // leftovers of a run that died before its cleanup
	t.Cleanup(func() {
		n.teardown()
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	})
	for _, cmd := range [][]string{
		{"ip", "netns", "add", netnsName},
		{"ip", "link", "add", vethRoot, "type", "veth", "peer", "name", vethNS},
		{"ip", "link", "set", vethNS, "netns", netnsName},
		{"ip", "addr", "add", rootIP + "/24", "dev", vethRoot},
		{"ip", "addr", "add", etcdIP + "/32", "dev", vethRoot},
		{"ip", "link", "set", vethRoot, "up"},
		{"ip", "netns", "exec", netnsName, "ip", "link", "set", "lo", "up"},
		{"ip", "netns", "exec", netnsName, "ip", "addr", "add", nsIP + "/24", "dev", vethNS},
		{"ip", "netns", "exec", netnsName, "ip", "link", "set", vethNS, "up"},
		{"ip", "netns", "exec", netnsName, "ip", "route", "add", etcdIP + "/32", "via", rootIP},
	} {
		if err := run(cmd...); err != nil {
			if os.Getenv("CI") == "" {
				t.Skipf("network namespaces unavailable here (skipped outside CI; CI must run this test): %v", err)
			}
			t.Fatalf("network namespace setup: %v", err)
		}
	}
	return n
}

// teardown kills what still runs in the namespace and deletes it and the
// veth pair (deleting one end deletes both). It ignores what is not there.
func (n *netns) teardown() {
	if out, err := exec.Command("ip", "netns", "pids", netnsName).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	_ = run("ip", "link", "del", vethRoot)
	_ = run("ip", "netns", "del", netnsName)
}

// cutEtcd partitions silo 0's namespace from etcd; healEtcd undoes it.
func (n *netns) cutEtcd() error {
	return run("ip", "netns", "exec", netnsName, "ip", "route", "replace", "blackhole", etcdIP+"/32")
}

func (n *netns) healEtcd() error {
	return run("ip", "netns", "exec", netnsName, "ip", "route", "replace", etcdIP+"/32", "via", rootIP)
}
