package directory_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/granary-rt/granary/directory"
	"github.com/granary-rt/granary/grain"
)

// benchIDs registers n ids in d and returns them.
func benchIDs(b *testing.B, d directory.Directory, n int) []grain.ID {
	ids := make([]grain.ID, n)
	for i := range ids {
		ids[i] = grain.ID{Type: "bench.Account", Key: fmt.Sprintf("acct-%d", i)}
		if _, err := d.Register(context.Background(), ids[i], entry("a", uint64(i))); err != nil {
			b.Fatal(err)
		}
	}
	return ids
}

// BenchmarkLookup measures cache hits: one goroutine, then 64 goroutines
// looking up 1024 distinct cached ids.
func BenchmarkLookup(b *testing.B) {
	dirs := []struct {
		name string
		new  func(b *testing.B) directory.Directory
	}{
		{"etcd", func(b *testing.B) directory.Directory {
			cli := newClient(b)
			d, err := directory.NewEtcd(cli, directory.EtcdConfig{Prefix: testPrefix(b), Lease: grantLease(b, cli)})
			if err != nil {
				b.Fatal(err)
			}
			return d
		}},
		{"memory", func(*testing.B) directory.Directory { return directory.NewMemory() }},
	}
	for _, dd := range dirs {
		b.Run("dir="+dd.name+"/cache=hit/goroutines=1", func(b *testing.B) {
			d := dd.new(b)
			ids := benchIDs(b, d, 1024)
			ctx := context.Background()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, ok, err := d.Lookup(ctx, ids[i&1023]); !ok || err != nil {
					b.Fatal(ok, err)
				}
				i++
			}
		})
		b.Run("dir="+dd.name+"/cache=hit/goroutines=64", func(b *testing.B) {
			benchLookupParallel(b, dd.new(b), 1024)
		})
		b.Run("dir="+dd.name+"/cache=hit/goroutines=64/ids=1", func(b *testing.B) {
			benchLookupParallel(b, dd.new(b), 1)
		})
	}
}

// benchLookupParallel looks up n cached ids from 64 goroutines; n = 1 is
// a hot grain every goroutine calls.
func benchLookupParallel(b *testing.B, d directory.Directory, n int) {
	ids := benchIDs(b, d, n)
	ctx := context.Background()
	var seq atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seq.Add(1)) * 131
		for pb.Next() {
			if _, ok, err := d.Lookup(ctx, ids[i%n]); !ok || err != nil {
				b.Error(ok, err)
				return
			}
			i++
		}
	})
}

// BenchmarkRegister measures registrations against the embedded etcd (no
// fsync), each of a new id, by 1, 16 and 64 concurrent callers.
func BenchmarkRegister(b *testing.B) {
	for _, callers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("dir=etcd/goroutines=%d", callers), func(b *testing.B) {
			cli := newClient(b)
			d, err := directory.NewEtcd(cli, directory.EtcdConfig{Prefix: testPrefix(b), Lease: grantLease(b, cli)})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			var seq atomic.Int64
			e := entry("a", 1)
			b.SetParallelism(max(1, callers/runtime.GOMAXPROCS(0)))
			b.ResetTimer()
			run := func() {
				id := grain.ID{Type: "bench.Account", Key: fmt.Sprint(seq.Add(1))}
				if _, err := d.Register(ctx, id, e); err != nil {
					b.Error(err)
				}
			}
			if callers == 1 {
				for b.Loop() {
					run()
				}
			} else {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						run()
					}
				})
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "registrations/s")
		})
	}
}
