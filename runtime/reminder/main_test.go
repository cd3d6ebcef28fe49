package reminder_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/granary-rt/granary/runtime/etcdembed"
)

// cli is connected to the package's embedded etcd server, which TestMain
// starts before and stops after all tests. (etcdembed rather than
// runtimetest.Etcd: runtimetest imports runtime, which imports this
// package.)
var cli *clientv3.Client

// withEtcd runs the tests with an embedded etcd server and closes it (and
// the client) before goleak looks for leaked goroutines.
type withEtcd struct{ m *testing.M }

func (w withEtcd) Run() int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := etcdembed.Start(ctx, etcdembed.Config{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start embedded etcd:", err)
		return 1
	}
	defer srv.Close()
	cli, err = clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcd client:", err)
		return 1
	}
	defer cli.Close()
	return w.m.Run()
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(withEtcd{m}) }
