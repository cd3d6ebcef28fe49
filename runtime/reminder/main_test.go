package reminder_test

import (
	"os"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/granary-rt/granary/runtime/etcdembed/etcdembedtest"
)

// cli is connected to the package's embedded etcd server, which TestMain
// starts before and stops after all tests. (etcdembedtest rather than
// runtimetest.Etcd: runtimetest imports runtime, which imports this
// package.)
var cli *clientv3.Client

func TestMain(m *testing.M) { os.Exit(etcdembedtest.MainWithClient(m, &cli)) }
