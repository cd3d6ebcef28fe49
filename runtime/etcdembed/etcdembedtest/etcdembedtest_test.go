package etcdembedtest

import (
	"context"
	"net"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/granary-rt/granary/runtime/etcdembed"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRunServesEtcd(t *testing.T) {
	var endpoints []string
	code := Run(func() int {
		if len(endpoints) == 0 {
			t.Error("endpoints not set before run")
			return 1
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Error(err)
			return 1
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := cli.Put(ctx, "k", "v"); err != nil {
			t.Error(err)
			return 1
		}
		return 0
	}, &endpoints)
	if code != 0 {
		t.Fatalf("Run = %d, want 0", code)
	}
}

func TestRunKeepsFailureCode(t *testing.T) {
	var endpoints []string
	if code := Run(func() int { return 3 }, &endpoints); code != 3 {
		t.Fatalf("Run = %d, want 3", code)
	}
}

// leak blocks until stop closes.
func leak(stop <-chan struct{}) { <-stop }

func TestRunFindsLeaks(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	run := func() int {
		go leak(stop)
		return 0
	}
	var endpoints []string
	if code := Run(run, &endpoints); code != 1 {
		t.Errorf("Run with a leaked goroutine = %d, want 1", code)
	}
	ignore := goleak.IgnoreTopFunction("github.com/granary-rt/granary/runtime/etcdembed/etcdembedtest.leak")
	if code := Run(run, &endpoints, ignore); code != 0 {
		t.Errorf("Run with the leak ignored = %d, want 0", code)
	}
}

func TestRunStartFailure(t *testing.T) {
	// The client address is taken, so the server cannot start.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var endpoints []string
	ran := false
	code := runWith(etcdembed.Config{ClientAddr: ln.Addr().String()}, func() int {
		ran = true
		return 0
	}, &endpoints)
	if code != 1 || ran {
		t.Fatalf("runWith = %d (ran %v), want 1 without running", code, ran)
	}
}
