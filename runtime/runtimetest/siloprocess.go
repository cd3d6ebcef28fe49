package runtimetest

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/granary-rt/granary/runtime"
)

// Environment of silo children beyond runtime.BindFlags' GRANARY_* ones.
const (
	// EnvCollectionAge sets the default collection age of a silo child.
	EnvCollectionAge = "GRANARY_TEST_COLLECTION_AGE"
	// EnvReminderMinPeriod sets runtime.Config.ReminderMinPeriod.
	EnvReminderMinPeriod = "GRANARY_TEST_REMINDER_MIN_PERIOD"
	// EnvGatewayTokens gives a silo child a runtime.StaticTokens
	// authenticator: comma-separated token=name pairs.
	EnvGatewayTokens = "GRANARY_TEST_GATEWAY_TOKENS"
)

// runSiloChild runs a silo configured from the GRANARY_* environment (see
// runtime.Config.BindFlags), prints "READY <silo-id> <address> <gateway
// address>" once it serves, and stops it gracefully when stdin closes or on SIGTERM/SIGINT.
func runSiloChild(register func(*runtime.Silo)) int {
	if register == nil {
		fmt.Fprintln(os.Stderr, "runtimetest: silo child without a register function (pass one to ChildMain)")
		return 2
	}
	var cfg runtime.Config
	cfg.BindFlags(flag.NewFlagSet("silo", flag.ContinueOnError))
	if d, err := time.ParseDuration(os.Getenv(EnvCollectionAge)); err == nil {
		cfg.CollectionAge = d
	}
	if d, err := time.ParseDuration(os.Getenv(EnvReminderMinPeriod)); err == nil {
		cfg.ReminderMinPeriod = d
	}
	if v := os.Getenv(EnvGatewayTokens); v != "" {
		tokens := map[string]string{}
		for _, pair := range strings.Split(v, ",") {
			if tok, name, ok := strings.Cut(pair, "="); ok {
				tokens[tok] = name
			}
		}
		cfg.Authenticator = runtime.StaticTokens(tokens)
	}
	if os.Getenv("GRANARY_TEST_VERBOSE") != "" {
		cfg.Logger, _ = zap.NewDevelopment()
	}
	s, err := runtime.NewSilo(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "runtimetest: silo child:", err)
		return 1
	}
	register(s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err = s.Start(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "runtimetest: silo child:", err)
		return 1
	}
	// Stdout is the protocol with the parent (StartSiloProcess), not a log.
	fmt.Fprintf(os.Stdout, "READY %s %s %s\n", s.ID(), s.Address(), s.GatewayAddress())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	eof := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(eof)
	}()
	select {
	case <-sig:
	case <-eof:
	}
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "runtimetest: silo child stop:", err)
		return 1
	}
	return 0
}

// SiloProcessOptions configure StartSiloProcess.
type SiloProcessOptions struct {
	Endpoints []string
	Cluster   string
	SiloID    string
	LeaseTTL  time.Duration
	// CollectionAge is the silo's default collection age (0: default).
	CollectionAge time.Duration
	// Env adds environment variables (KEY=value).
	Env []string
}

// SiloProcess is a silo running in a child OS process: its id, its silo
// listener's address and its gateway's.
type SiloProcess struct {
	ID, Addr, Gateway string
	cmd               *exec.Cmd
	stdin             io.WriteCloser
	exited            chan struct{}
	err               error
}

// StartSiloProcess starts a silo in a separate OS process (the test binary
// re-executed; see ChildMain) and waits until it serves. The process is
// killed when the test ends if it still runs.
func StartSiloProcess(tb testing.TB, o SiloProcessOptions) *SiloProcess {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=silo",
		runtime.EnvEtcdEndpoints+"="+strings.Join(o.Endpoints, ","),
		runtime.EnvCluster+"="+o.Cluster,
		runtime.EnvSiloID+"="+o.SiloID,
		runtime.EnvListen+"=127.0.0.1:0",
		runtime.EnvGateway+"=127.0.0.1:0")
	if o.LeaseTTL > 0 {
		cmd.Env = append(cmd.Env, runtime.EnvLeaseTTL+"="+o.LeaseTTL.String())
	}
	if o.CollectionAge > 0 {
		cmd.Env = append(cmd.Env, EnvCollectionAge+"="+o.CollectionAge.String())
	}
	cmd.Env = append(cmd.Env, o.Env...)
	cmd.Stderr = os.Stderr
	p := &SiloProcess{cmd: cmd, exited: make(chan struct{})}
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("runtimetest: start silo process: %v", err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	tb.Cleanup(p.Kill)
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, "READY ") {
				ready <- line
			}
		}
		close(ready)
	}()
	select {
	case line, ok := <-ready:
		if !ok {
			tb.Fatalf("runtimetest: silo process exited before it was ready")
		}
		f := strings.Fields(line)
		if len(f) != 4 {
			tb.Fatalf("runtimetest: silo process said %q", line)
		}
		p.ID, p.Addr, p.Gateway = f[1], f[2], f[3]
	case <-time.After(60 * time.Second):
		tb.Fatalf("runtimetest: silo process not ready after 60s")
	}
	return p
}

// Kill kills the process with SIGKILL (a crash: nothing is persisted) and
// waits for it to exit. It does nothing if the process already exited.
func (p *SiloProcess) Kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// Signal sends sig to the process (SIGSTOP, SIGCONT, ...).
func (p *SiloProcess) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Stop asks the silo to stop gracefully and waits up to timeout for it to
// exit; then it kills it and returns an error.
func (p *SiloProcess) Stop(timeout time.Duration) error {
	_ = p.stdin.Close()
	select {
	case <-p.exited:
		return p.err
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("runtimetest: silo %s did not stop within %v", p.ID, timeout)
	}
}

// Exited is closed when the process has exited.
func (p *SiloProcess) Exited() <-chan struct{} { return p.exited }
