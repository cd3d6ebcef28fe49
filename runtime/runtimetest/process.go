package runtimetest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/etcdembed"
)

const childEnv = "GRANARY_RUNTIMETEST_CHILD"

// ChildMain must be the first statement of TestMain in packages that use
// EtcdProcess or StartSiloProcess: when the test binary was started as a
// child by this package, it runs the child's role and exits; otherwise it
// returns at once. register registers the grain types of silo children
// (nil if the package starts none).
func ChildMain(register func(*runtime.Silo)) {
	switch os.Getenv(childEnv) {
	case "":
		return
	case "etcd":
		os.Exit(runEtcdChild())
	case "silo":
		os.Exit(runSiloChild(register))
	default:
		fmt.Fprintf(os.Stderr, "runtimetest: unknown child role %q\n", os.Getenv(childEnv))
		os.Exit(2)
	}
}

// runEtcdChild runs an embedded etcd, prints its endpoints on one line and
// serves until stdin closes (the parent died or asked it to stop).
func runEtcdChild() int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	srv, err := etcdembed.Start(ctx, etcdembed.Config{Dir: os.Getenv(etcdDirEnv), ClientAddr: os.Getenv(etcdAddrEnv)})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "runtimetest: etcd child:", err)
		return 1
	}
	// Stdout is the protocol with the parent (EtcdProcess), not a log.
	fmt.Fprintln(os.Stdout, strings.Join(srv.Endpoints(), ","))
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = srv.Close()
	return 0
}

const (
	etcdDirEnv  = "GRANARY_TEST_ETCD_DIR"
	etcdAddrEnv = "GRANARY_TEST_ETCD_ADDR"
)

// EtcdProcess starts an etcd server in a separate OS process (the test
// binary re-executed; see ChildMain) and returns its endpoints. It is
// stopped when the test ends. Use it where the etcd server must not share
// the test's heap or fate: memory measurements, etcd restarts.
func EtcdProcess(tb testing.TB) []string {
	tb.Helper()
	return StartEtcdProcess(tb).Endpoints
}

// EtcdProc is an etcd server in a child process, with a fixed data
// directory and client address so that it can be killed and restarted.
type EtcdProc struct {
	Endpoints []string
	tb        testing.TB
	dir, addr string
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	exited    chan struct{}
}

// StartEtcdProcess starts etcd in a child process; see EtcdProc.
func StartEtcdProcess(tb testing.TB) *EtcdProc {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	e := &EtcdProc{tb: tb, dir: tb.TempDir(), addr: addr, Endpoints: []string{"http://" + addr}}
	e.Start()
	tb.Cleanup(e.Stop)
	return e
}

// Start starts the process again after Kill or Stop, on the same data
// directory and address, and waits until it serves.
func (e *EtcdProc) Start() {
	e.tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=etcd", etcdDirEnv+"="+e.dir, etcdAddrEnv+"="+e.addr)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		e.tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		e.tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.tb.Fatalf("runtimetest: start etcd process: %v", err)
	}
	e.cmd, e.stdin, e.exited = cmd, stdin, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(e.exited)
	}()
	if _, err := bufio.NewReader(stdout).ReadString('\n'); err != nil {
		e.Kill()
		e.tb.Fatalf("runtimetest: etcd process did not report its endpoints: %v", err)
	}
}

// Kill kills the etcd process with SIGKILL and waits for it to exit.
func (e *EtcdProc) Kill() {
	if e.cmd == nil {
		return
	}
	_ = e.cmd.Process.Kill()
	<-e.exited
	e.cmd = nil
}

// Stop stops the etcd process gracefully (or kills it after 10s).
func (e *EtcdProc) Stop() {
	if e.cmd == nil {
		return
	}
	_ = e.stdin.Close()
	select {
	case <-e.exited:
	case <-time.After(10 * time.Second):
		_ = e.cmd.Process.Kill()
		<-e.exited
	}
	e.cmd = nil
}
