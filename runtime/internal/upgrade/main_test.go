package upgrade_test

import (
	"os"
	"testing"

	"github.com/granary-rt/granary/runtime/etcdembed/etcdembedtest"
)

// endpoints of the etcd shared by the tests of this package.
var endpoints []string

func TestMain(m *testing.M) {
	code := etcdembedtest.Main(m, &endpoints)
	removeBuilds()
	os.Exit(code)
}
