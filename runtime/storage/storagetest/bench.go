package storagetest

import (
	"context"
	"fmt"
	"testing"

	"github.com/granary-rt/granary/runtime/storage"
)

// benchSizes are the value sizes the benchmarks use: a typical small state
// and a larger one.
var benchSizes = []int{128, 4096}

// Bench runs the shared provider benchmarks: read/size=N reads one record of
// N bytes; write/size=N overwrites one record with its current etag (a
// compare-and-set chain, as an activation persisting its state does). Each
// reports ops/s. newProvider is called once per sub-benchmark run.
func Bench(b *testing.B, newProvider func(b *testing.B) storage.Provider) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("read/size=%d", size), func(b *testing.B) {
			p := newProvider(b)
			ctx := context.Background()
			k := storage.Key{GrainType: "storagetest.Bench", GrainKey: b.Name(), State: "read"}
			v := randomBytes(size)
			if _, err := p.Write(ctx, k, v, ""); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(size))
			n := 0
			for b.Loop() {
				data, _, err := p.Read(ctx, k)
				if err != nil || len(data) != size {
					b.Fatalf("Read: %d bytes, %v", len(data), err)
				}
				n++
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "ops/s")
		})
		b.Run(fmt.Sprintf("write/size=%d", size), func(b *testing.B) {
			p := newProvider(b)
			ctx := context.Background()
			k := storage.Key{GrainType: "storagetest.Bench", GrainKey: b.Name(), State: "write"}
			v := randomBytes(size)
			etag := ""
			b.SetBytes(int64(size))
			n := 0
			for b.Loop() {
				var err error
				if etag, err = p.Write(ctx, k, v, etag); err != nil {
					b.Fatal(err)
				}
				n++
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}
