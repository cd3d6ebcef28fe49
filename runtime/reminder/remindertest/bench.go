package remindertest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/reminder"
)

// benchBucketSizes are the bucket sizes list-bucket measures.
var benchBucketSizes = []int{100, 1000, 10000, 100000}

// Bench runs the shared table benchmarks, each reporting ops/s:
//
//   - upsert/mode=blind overwrites one reminder without an etag;
//   - upsert/mode=cas overwrites it with its current etag (a
//     compare-and-set chain, as a grain changing a reminder does);
//   - get reads one reminder;
//   - list-bucket/size=N lists a bucket of N reminders, and also reports
//     reminders/s.
//
// newTable is called once per sub-benchmark run and must return an empty
// table.
func Bench(b *testing.B, newTable func(b *testing.B) reminder.Table) {
	for _, mode := range []string{"blind", "cas"} {
		b.Run("upsert/mode="+mode, func(b *testing.B) {
			tb := newTable(b)
			ctx := context.Background()
			e := entry(gid("bench"), "upsert", base, time.Minute)
			n := 0
			for b.Loop() {
				etag, err := tb.Upsert(ctx, e)
				if err != nil {
					b.Fatal(err)
				}
				if mode == "cas" {
					e.Etag = etag
				}
				n++
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "ops/s")
		})
	}
	b.Run("get", func(b *testing.B) {
		tb := newTable(b)
		ctx := context.Background()
		e := entry(gid("bench"), "get", base, time.Minute)
		if _, err := tb.Upsert(ctx, e); err != nil {
			b.Fatal(err)
		}
		n := 0
		for b.Loop() {
			if _, ok, err := tb.Get(ctx, e.Grain, e.Name); err != nil || !ok {
				b.Fatalf("Get = (%v, %v)", ok, err)
			}
			n++
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "ops/s")
	})
	for _, size := range benchBucketSizes {
		b.Run(fmt.Sprintf("list-bucket/size=%d", size), func(b *testing.B) {
			tb := newTable(b)
			ctx := context.Background()
			id := gid("bench-list")
			if err := Fill(ctx, tb, id, size); err != nil {
				b.Fatal(err)
			}
			bucket := reminder.BucketOf(reminder.Hash(id))
			n := 0
			for b.Loop() {
				es, err := tb.ListBucket(ctx, bucket)
				if err != nil || len(es) != size {
					b.Fatalf("ListBucket(%d) = (%d reminders, %v), want %d", bucket, len(es), err, size)
				}
				n++
			}
			secs := b.Elapsed().Seconds()
			b.ReportMetric(float64(n)/secs, "ops/s")
			b.ReportMetric(float64(n*size)/secs, "reminders/s")
		})
	}
}

// Fill upserts n reminders of grain id, named "r000000", "r000001", ...,
// with a few concurrent callers: n reminders in id's bucket. It is for
// tests and benchmarks of large buckets.
func Fill(ctx context.Context, tb reminder.Table, id grain.ID, n int) error {
	const workers = 16
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				e := entry(id, fmt.Sprintf("r%06d", i), base.Add(time.Duration(i)*time.Millisecond), time.Minute)
				if _, err := tb.Upsert(ctx, e); err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("remindertest: fill %s: %w", id, err) })
					cancel()
					return
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}
