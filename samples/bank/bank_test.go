package bank_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/runtimetest"
	"github.com/granary-rt/granary/samples/bank"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := bank.Demo(ctx, &out, nil); err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"errors.Is(err, bank.ErrInsufficientFunds) = true",
		"alice  balance    70",
		"total held 2070",
		"silo-2 now hosts 6 accounts",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
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
