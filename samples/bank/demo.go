package bank

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"

	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/etcdembed"
)

// Demo runs the bank on a small cluster: an embedded etcd and two silos in
// this process, calls accounts through both, shows an overdraft being
// refused, stops one silo and shows its accounts reactivated on the other
// with their persisted balances. It writes what happens to w.
func Demo(ctx context.Context, w io.Writer, log *zap.Logger) error {
	say := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	if log == nil {
		log = zap.NewNop()
	}

	etcd, err := etcdembed.Start(ctx, etcdembed.Config{Logger: log.Named("etcd")})
	if err != nil {
		return err
	}
	defer etcd.Close()
	say("started an embedded etcd at %v", etcd.Endpoints())

	var silos []*runtime.Silo
	defer func() {
		for _, s := range silos {
			_ = s.Stop(context.Background())
		}
	}()
	for i := 1; i <= 2; i++ {
		s, err := runtime.NewSilo(runtime.Config{
			Cluster: "bank-demo",
			SiloID:  fmt.Sprintf("silo-%d", i),
			Etcd:    runtime.EtcdConfig{Endpoints: etcd.Endpoints()},
			Logger:  log.Named(fmt.Sprintf("silo-%d", i)),
		})
		if err != nil {
			return err
		}
		RegisterAccount(s, NewAccount)
		if err := s.Start(ctx); err != nil {
			return err
		}
		silos = append(silos, s)
		say("started %s", s.ID())
	}

	accounts := []string{"alice", "bob", "carol", "dave", "erin", "frank"}
	say("\n1. deposits, alternating between the clients of %s and %s", silos[0].ID(), silos[1].ID())
	for i, name := range accounts {
		b, err := NewAccountRef(silos[i%2].Client(), name).Deposit(ctx, int64(100*(i+1)))
		if err != nil {
			return fmt.Errorf("deposit to %s: %w", name, err)
		}
		say("   %-6s deposit %5d -> balance %5d", name, 100*(i+1), b)
	}
	say("   activations: %s hosts %d, %s hosts %d (every account exactly once, in the whole cluster)",
		silos[0].ID(), silos[0].ActivationCount(), silos[1].ID(), silos[1].ActivationCount())

	say("\n2. an overdraft is a domain error that reaches the caller")
	alice := NewAccountRef(silos[1].Client(), "alice")
	_, err = alice.Withdraw(ctx, 1_000)
	say("   alice withdraw 1000 -> error %q", err)
	say("   errors.Is(err, bank.ErrInsufficientFunds) = %v", errors.Is(err, ErrInsufficientFunds))
	if !errors.Is(err, ErrInsufficientFunds) {
		return fmt.Errorf("overdraft not refused: %v", err)
	}
	if b, err := alice.Withdraw(ctx, 30); err != nil {
		return err
	} else {
		say("   alice withdraw   30 -> balance %d", b)
	}

	say("\n3. stopping %s gracefully: it deactivates its accounts and writes their state", silos[0].ID())
	if err := silos[0].Stop(ctx); err != nil {
		return err
	}
	say("   %s stopped; %s hosts %d", silos[0].ID(), silos[1].ID(), silos[1].ActivationCount())

	say("\n4. every account answers through %s, with the balance it had", silos[1].ID())
	total := int64(0)
	for _, name := range accounts {
		b, err := NewAccountRef(silos[1].Client(), name).Balance(ctx)
		if err != nil {
			return fmt.Errorf("balance of %s: %w", name, err)
		}
		total += b
		say("   %-6s balance %5d", name, b)
	}
	say("   %s now hosts %d accounts; total held %d", silos[1].ID(), silos[1].ActivationCount(), total)
	if want := int64(2100 - 30); total != want {
		return fmt.Errorf("total %d, want %d: money was lost", total, want)
	}

	hist, err := alice.History(ctx, 5)
	if err != nil {
		return err
	}
	say("\n5. alice's history (newest first)")
	for _, t := range hist {
		say("   %+5d -> %5d", t.Amount, t.Balance)
	}

	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := silos[1].Stop(stopCtx); err != nil {
		return err
	}
	say("\nstopped %s; done", silos[1].ID())
	return nil
}
