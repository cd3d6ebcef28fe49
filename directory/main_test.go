package directory_test

import (
	"context"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/granary-rt/granary/runtime/etcdembed/etcdembedtest"
)

// endpoints are the client URLs of the package's embedded etcd, started
// once in TestMain.
var endpoints []string

func TestMain(m *testing.M) {
	os.Exit(etcdembedtest.Main(m, &endpoints))
}

// newClient returns an etcd client that is closed when the test ends.
func newClient(tb testing.TB, opts ...grpc.DialOption) *clientv3.Client {
	tb.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		DialOptions: opts,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}

// rpcCounter counts the unary etcd requests (Range, Txn, Put, ...) made
// through a client built with its dial option.
type rpcCounter struct{ n atomic.Int64 }

func (c *rpcCounter) option() grpc.DialOption {
	return grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if strings.HasPrefix(method, "/etcdserverpb.KV/") {
			c.n.Add(1)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})
}

func (c *rpcCounter) load() int64 { return c.n.Load() }

// testPrefix returns a key prefix no other test uses.
func testPrefix(tb testing.TB) string {
	return "/granary-test/" + strings.ReplaceAll(tb.Name(), "/", "_") + "/"
}

// grantLease grants a lease that outlives the test unless revoked.
func grantLease(tb testing.TB, cli *clientv3.Client) clientv3.LeaseID {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Grant(ctx, 120)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cli.Revoke(ctx, resp.ID) //nolint:errcheck // may be revoked already
	})
	return resp.ID
}

func testCtx(tb testing.TB) context.Context {
	// Generous: CI runs packages in parallel on two cores.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	tb.Cleanup(cancel)
	return ctx
}
