package runtimetest

import (
	"bufio"
	"context"
	"fmt"
	"io"
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
	srv, err := etcdembed.Start(ctx, etcdembed.Config{})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "runtimetest: etcd child:", err)
		return 1
	}
	fmt.Println(strings.Join(srv.Endpoints(), ","))
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = srv.Close()
	return 0
}

// EtcdProcess starts an etcd server in a separate OS process (the test
// binary re-executed; see ChildMain) and returns its endpoints. It is
// stopped when the test ends. Use it where the etcd server must not share
// the test's heap or fate: memory measurements, etcd restarts.
func EtcdProcess(tb testing.TB) []string {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=etcd")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("runtimetest: start etcd process: %v", err)
	}
	tb.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		tb.Fatalf("runtimetest: etcd process did not report its endpoints: %v", err)
	}
	return strings.Split(strings.TrimSpace(line), ",")
}
