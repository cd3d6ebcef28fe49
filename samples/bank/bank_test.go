package bank_test

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/runtimetest"
	"github.com/granary-rt/granary/samples/bank"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDemo builds the silo and web commands and runs the demo with them: a
// real cluster of separate processes, one of which is killed with SIGKILL.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds commands and starts processes")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		// The test runs under `go test`, so a missing go command is a
		// broken environment, not a reason to skip.
		t.Fatal("no go command to build the silo and web commands:", err)
	}
	bin := t.TempDir()
	build := exec.Command(goBin, "build", "-o", bin+string(filepath.Separator),
		"github.com/granary-rt/granary/samples/bank/cmd/silo",
		"github.com/granary-rt/granary/samples/web/cmd/web")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	start := time.Now()
	err = bank.Demo(ctx, &out, bank.DemoOptions{
		SiloBin: filepath.Join(bin, "silo"),
		WebBin:  filepath.Join(bin, "web"),
	})
	t.Logf("demo took %v", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	text := out.String()
	for _, want := range []string{
		`-> 409 Conflict, code "bank.insufficient_funds"`,
		"'s lease expired: etcd deleted its membership and its directory entries",
		"all 12 accounts answer",
		"Every acknowledged deposit and withdrawal is there",
		"The grain directory is empty, and etcd holds the 12 balances",
		"No money was lost",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if strings.Contains(text, "MONEY LOST") || strings.Contains(text, "TOO MUCH") {
		t.Errorf("demo output reports a wrong balance")
	}
	crash := regexp.MustCompile(`Crash: kill -9 (silo-\d) \(pid \d+\), which hosts (\d+) accounts`).FindStringSubmatch(text)
	if crash == nil {
		t.Errorf("demo output does not say which silo it killed")
	} else if n, _ := strconv.Atoi(crash[2]); n < 4 {
		t.Errorf("the killed silo hosted %d accounts; the busiest of 3 silos hosts at least 4 of 12", n)
	} else if moved := strings.Count(text, "(was "+crash[1]+")"); moved != n {
		t.Errorf("%d accounts shown as moved from %s, want %d", moved, crash[1], n)
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", text)
	}
}

func cluster(t *testing.T, cfg runtime.Config) *runtimetest.Cluster {
	return runtimetest.NewCluster(t, 1, runtimetest.Options{
		Config:   cfg,
		Register: func(s *runtime.Silo) { bank.RegisterAccount(s, bank.NewAccount) },
	})
}

func TestOverdraftIsADomainErrorAndChangesNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	acct := bank.NewAccountRef(cluster(t, runtime.Config{}).Client(), "alice")
	if _, err := acct.Deposit(ctx, 100); err != nil {
		t.Fatal(err)
	}
	if _, err := acct.Withdraw(ctx, 101); !errors.Is(err, bank.ErrInsufficientFunds) {
		t.Fatalf("overdraft: err = %v, want ErrInsufficientFunds", err)
	}
	if b, err := acct.Balance(ctx); err != nil || b != 100 {
		t.Fatalf("balance after refused overdraft = %d, %v", b, err)
	}
	for _, amount := range []int64{0, -5} {
		if _, err := acct.Deposit(ctx, amount); !errors.Is(err, bank.ErrInvalidAmount) {
			t.Fatalf("deposit %d: err = %v, want ErrInvalidAmount", amount, err)
		}
	}
}

func TestBalanceSurvivesDeactivation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := cluster(t, runtime.Config{CollectionAge: 10 * time.Millisecond})
	acct := bank.NewAccountRef(c.Client(), "bob")
	for _, d := range []int64{10, 20, 30} {
		if _, err := acct.Deposit(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := acct.Withdraw(ctx, 15); err != nil {
		t.Fatal(err)
	}
	runtimetest.Eventually(t, 5*time.Second, func() bool { return c.Silos[0].ActivationCount() == 0 },
		"account not deactivated")
	if b, err := acct.Balance(ctx); err != nil || b != 45 {
		t.Fatalf("balance after reactivation = %d, %v; want 45", b, err)
	}
	h, err := acct.History(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h[0].Amount != -15 || h[0].Balance != 45 || h[1].Amount != 30 {
		t.Fatalf("history = %+v", h)
	}
}
