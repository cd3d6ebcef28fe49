package chaos

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/cluster"
	"github.com/granary-rt/granary/runtime/storage/postgres/pgtest"
)

// leaseTTL is the silos' lease TTL: short, so that faults play out fast.
const leaseTTL = 2 * time.Second

var builds sync.Map // build tags -> *buildResult

type buildResult struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// removeBuilds removes the binaries chaosnode built; TestMain calls it
// after the tests.
func removeBuilds() {
	builds.Range(func(_, v any) bool {
		if b := v.(*buildResult); b.dir != "" {
			_ = os.RemoveAll(b.dir)
		}
		return true
	})
}

// chaosnode builds cmd/chaosnode, without the race detector (the silos
// run faster, and the test process checks races in the clients), once per
// test binary and set of build tags.
func chaosnode(t *testing.T, tags string) string {
	t.Helper()
	v, _ := builds.LoadOrStore(tags, &buildResult{})
	b := v.(*buildResult)
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "granary-chaosnode-")
		if err != nil {
			b.err = err
			return
		}
		b.dir, b.path = dir, filepath.Join(dir, "chaosnode")
		args := []string{"build", "-o", b.path}
		if tags != "" {
			args = append(args, "-tags", tags)
		}
		args = append(args, "github.com/granary-rt/granary/runtime/internal/chaos/cmd/chaosnode")
		start := time.Now()
		out, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
			return
		}
		t.Logf("built chaosnode (tags %q) in %v", tags, time.Since(start).Round(time.Millisecond))
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// node is an etcd or silo process that can be killed, frozen and started
// again with the same address.
type node struct {
	name   string
	netns  bool // run inside the test's network namespace
	bin    string
	args   func(incarnation int) []string
	logDir string

	mu          sync.Mutex
	cmd         *exec.Cmd
	stdin       io.WriteCloser
	exited      chan struct{}
	incarnation int
	id          string // the silo id of the running incarnation
	stopped     bool   // SIGSTOP sent, no SIGCONT yet
}

// start starts the process and waits until it prints READY.
func (n *node) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.incarnation++
	args := n.args(n.incarnation)
	argv := append([]string{n.bin}, args...)
	if n.netns {
		argv = append([]string{"ip", "netns", "exec", netnsName}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	// A child dies with the test process, even frozen by SIGSTOP (a
	// running one also stops when its stdin closes).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := os.OpenFile(filepath.Join(n.logDir, n.name+".stderr"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer stderr.Close()
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", n.name, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	n.cmd, n.stdin, n.exited, n.stopped = cmd, stdin, exited, false
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, "READY ") {
				ready <- line
				break
			}
		}
		close(ready)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case line, ok := <-ready:
		if !ok {
			return fmt.Errorf("%s exited before it was ready (see %s)", n.name, stderr.Name())
		}
		if f := strings.Fields(line); len(f) >= 2 {
			n.id = f[1]
		}
		return nil
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%s not ready after 60s (see %s)", n.name, stderr.Name())
	}
}

// kill kills the process with SIGKILL and waits for it to exit.
func (n *node) kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.exited
	n.cmd, n.stopped = nil, false
}

// stop stops the process gracefully (SIGTERM after thawing it), or kills
// it after timeout.
func (n *node) stop(timeout time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGCONT)
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	_ = n.stdin.Close()
	select {
	case <-n.exited:
	case <-time.After(timeout):
		_ = n.cmd.Process.Kill()
		<-n.exited
	}
	n.cmd = nil
}

// freeze sends SIGSTOP; thaw sends SIGCONT.
func (n *node) freeze() error { return n.signal(syscall.SIGSTOP, true) }
func (n *node) thaw() error   { return n.signal(syscall.SIGCONT, false) }

func (n *node) signal(sig syscall.Signal, stopped bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return fmt.Errorf("%s is not running", n.name)
	}
	if err := n.cmd.Process.Signal(sig); err != nil {
		return err
	}
	n.stopped = stopped
	return nil
}

func (n *node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

func (n *node) siloID() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.id
}

// freePort returns a port free on ip now.
func freePort(t *testing.T, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// testCluster is an etcd process and three silo processes, silo 0 inside
// the network namespace, and the clients that call them.
type testCluster struct {
	t         *testing.T
	name      string
	net       *netns
	dir       string // artifacts: logs, history
	etcd      *node
	silos     []*node
	addrs     []string // silo i's gateway address (for clients), the same across restarts
	endpoints []string
	// viewer is a client through etcd, used for the membership view and
	// final reads.
	viewer *runtime.Client
}

// artifactDir returns where the run's logs and history go: a new
// directory under $GRANARY_CHAOS_ARTIFACTS if set, else under the system
// temporary directory. It is removed when the test passes, unless it was
// under $GRANARY_CHAOS_ARTIFACTS.
func artifactDir(t *testing.T) string {
	t.Helper()
	base := os.Getenv(envArtifacts)
	if base != "" {
		if err := os.MkdirAll(base, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := os.MkdirTemp(base, "granary-chaos-"+strings.ReplaceAll(t.Name(), "/", "-")+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs and history of this run are in %s", dir)
			return
		}
		if base == "" {
			_ = os.RemoveAll(dir)
		}
	})
	return dir
}

// startCluster starts etcd and three silos built with tags.
func startCluster(t *testing.T, tags string) *testCluster {
	t.Helper()
	requireRoot(t)
	bin := chaosnode(t, tags)
	c := &testCluster{t: t, name: fmt.Sprintf("chaos-%d", time.Now().UnixNano()), net: setupNetns(t), dir: artifactDir(t)}
	var pgDSN string
	switch v := os.Getenv(envStorage); v {
	case "", "etcd":
	case "postgres":
		pgDSN = pgtest.DSN(t)
		t.Logf("grain state in PostgreSQL (%s=postgres)", envStorage)
	default:
		t.Fatalf("%s=%q: want etcd or postgres", envStorage, v)
	}
	etcdAddr := net.JoinHostPort(etcdIP, freePort(t, etcdIP))
	c.endpoints = []string{"http://" + etcdAddr}
	etcdDir := filepath.Join(c.dir, "etcd-data")
	c.etcd = &node{name: "etcd", bin: bin, logDir: c.dir, args: func(int) []string {
		return []string{"etcd", "-dir", etcdDir, "-addr", etcdAddr}
	}}
	t.Cleanup(func() { c.etcd.stop(10 * time.Second) })
	if err := c.etcd.start(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		ip := rootIP
		port, gwPort := "", ""
		if i == 0 {
			ip, port, gwPort = nsIP, "7100", "7101" // the namespace is ours: any port is free
		} else {
			port, gwPort = freePort(t, rootIP), freePort(t, rootIP)
		}
		addr := net.JoinHostPort(ip, port)
		gateway := net.JoinHostPort(ip, gwPort)
		c.addrs = append(c.addrs, gateway)
		s := &node{name: fmt.Sprintf("silo%d", i), netns: i == 0, bin: bin, logDir: c.dir}
		s.args = func(inc int) []string {
			return []string{"silo",
				"-log", filepath.Join(c.dir, s.name+".log"),
				"-etcd", strings.Join(c.endpoints, ","),
				"-cluster", c.name,
				"-silo-id", fmt.Sprintf("silo%d.%d", i, inc),
				"-listen", addr,
				"-gateway", gateway,
				"-lease-ttl", leaseTTL.String(),
				"-write-through=" + fmt.Sprint(os.Getenv(envWriteThrough) == "1"),
				"-postgres", pgDSN,
			}
		}
		c.silos = append(c.silos, s)
		// Silos stop before etcd (cleanups run last-in first-out).
		t.Cleanup(func() { s.stop(5 * time.Second) })
	}
	var wg sync.WaitGroup
	for _, s := range c.silos {
		wg.Go(func() {
			if err := s.start(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	c.viewer = c.connect(t, nil)
	c.waitHealthy(t, 30*time.Second)
	return c
}

// connect returns a client through etcd (gateways nil) or through a
// static list of gateways; it is closed when the test ends.
func (c *testCluster) connect(t *testing.T, gateways []string) *runtime.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := runtime.ClientConfig{Cluster: c.name, Gateways: gateways, ResponseTimeout: 5 * time.Second}
	if gateways == nil {
		cfg.Etcd = runtime.EtcdConfig{Endpoints: c.endpoints}
	}
	cl, err := runtime.Connect(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// waitHealthy waits until the current incarnation of every silo is active
// in the viewer's membership view.
func (c *testCluster) waitHealthy(t *testing.T, timeout time.Duration) {
	t.Helper()
	if err := c.healthy(timeout); err != nil {
		t.Fatal(err)
	}
}

// healthy is waitHealthy returning an error.
func (c *testCluster) healthy(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := c.viewer.View().WaitFor(ctx, func(s *cluster.Snapshot) bool { return c.allActive(s) })
	if err != nil {
		return fmt.Errorf("silos %v not all active within %v: %w (view: %s)", c.siloIDs(), timeout, err, describeView(c.viewer.View().Current()))
	}
	return nil
}

// heal undoes every fault that may still be in place after a failed
// nemesis step: it thaws frozen processes, heals the partition and starts
// what is not running.
func (c *testCluster) heal() {
	_ = c.net.healEtcd()
	for _, n := range append([]*node{c.etcd}, c.silos...) {
		if n.running() {
			_ = n.thaw()
		} else if err := n.start(); err != nil {
			c.t.Errorf("heal: %v", err)
		}
	}
}

func (c *testCluster) allActive(s *cluster.Snapshot) bool {
	for _, n := range c.silos {
		info, ok := s.Get(n.siloID())
		if !ok || info.Status != cluster.StatusActive {
			return false
		}
	}
	return true
}

func (c *testCluster) siloIDs() []string {
	var ids []string
	for _, n := range c.silos {
		ids = append(ids, n.siloID())
	}
	return ids
}

func describeView(s *cluster.Snapshot) string {
	var parts []string
	for _, info := range s.Active() {
		parts = append(parts, fmt.Sprintf("%s@%s", info.SiloID, info.Address))
	}
	return "active [" + strings.Join(parts, " ") + "]"
}
