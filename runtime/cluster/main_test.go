package cluster_test

import (
	"context"
	"os"
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

// partition cuts a client off from etcd's lease keepalives while set: new
// LeaseKeepAlive streams hang until their context ends, as over a network
// that drops packets. Other requests pass.
type partition struct{ on atomic.Bool }

func (p *partition) option() grpc.DialOption {
	return grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if p.on.Load() && method == "/etcdserverpb.Lease/LeaseKeepAlive" {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return streamer(ctx, desc, cc, method, opts...)
	})
}

func testCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// testPrefix returns a cluster prefix no other test uses.
func testPrefix(tb testing.TB) string {
	return "/granary-test/" + tb.Name() + "/"
}
