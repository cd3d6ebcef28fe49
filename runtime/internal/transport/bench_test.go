package transport

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/granary-rt/granary/grain"
)

// BenchmarkRoundTrip measures small request/response round trips between a
// Client and a Server in this process over loopback TCP, with the given
// number of concurrent callers. The handler replies inline.
func BenchmarkRoundTrip(b *testing.B) {
	for _, callers := range []int{1, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			echo := HandlerFunc(func(ctx context.Context, req *Envelope, reply Replier) {
				reply.Reply(NewResponse(req.Body))
			})
			_, addr := startServer(b, ServerConfig{Logger: zap.NewNop()}, echo)
			c := newTestClient(b, ClientConfig{Logger: zap.NewNop()})
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
			defer cancel()
			body := []byte("0123456789abcdef")
			newReq := func() *Envelope {
				return &Envelope{Target: grain.ID{Type: "bench.Counter", Key: "key-42"}, Method: "Add", Fingerprint: 0x0123456789abcdef, Body: body}
			}
			if _, err := c.Call(ctx, addr, newReq()); err != nil { // dial
				b.Fatal(err)
			}

			var mu sync.Mutex
			var lat []time.Duration
			call := func(mine *[]time.Duration) bool {
				t0 := time.Now()
				if _, err := c.Call(ctx, addr, newReq()); err != nil {
					b.Error(err)
					return false
				}
				*mine = append(*mine, time.Since(t0))
				return true
			}
			b.ReportAllocs()
			start := time.Now()
			if callers == 1 {
				for b.Loop() {
					if !call(&lat) {
						break
					}
				}
			} else {
				procs := runtime.GOMAXPROCS(0)
				b.SetParallelism((callers + procs - 1) / procs)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					var mine []time.Duration
					for pb.Next() && call(&mine) {
					}
					mu.Lock()
					lat = append(lat, mine...)
					mu.Unlock()
				})
			}
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
			if len(lat) > 0 {
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			}
			st := c.Stats()
			if st.FramesSent > 0 {
				b.ReportMetric(float64(st.EnvelopesSent)/float64(st.FramesSent), "envelopes/frame")
			}
		})
	}
}

// BenchmarkOneWay measures one-way sends with 64 concurrent senders.
func BenchmarkOneWay(b *testing.B) {
	var wg sync.WaitGroup
	h := HandlerFunc(func(ctx context.Context, req *Envelope, reply Replier) { wg.Done() })
	_, addr := startServer(b, ServerConfig{Logger: zap.NewNop()}, h)
	c := newTestClient(b, ClientConfig{Logger: zap.NewNop()})
	ctx := context.Background()
	body := []byte("0123456789abcdef")
	wg.Add(1)
	if err := c.Send(ctx, addr, &Envelope{Target: grain.ID{Type: "bench.Counter", Key: "k"}, Method: "Bump", Body: body}); err != nil {
		b.Fatal(err)
	}
	wg.Wait()
	wg.Add(b.N)
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := c.Send(ctx, addr, &Envelope{Target: grain.ID{Type: "bench.Counter", Key: "k"}, Method: "Bump", Body: body}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "sends/s")
}

// BenchmarkFrame measures encoding and decoding a frame of small requests.
func BenchmarkFrame(b *testing.B) {
	lim := Limits{}
	if err := lim.validate("bench"); err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 64} {
		envs := make([]*Envelope, n)
		for i := range envs {
			envs[i] = &Envelope{Kind: KindRequest, ID: uint64(1000 + i), Target: grain.ID{Type: "bench.Counter", Key: "key-42"},
				Method: "Add", Fingerprint: 0x0123456789abcdef, Timeout: 5 * time.Second, Chain: []string{"bench.Caller/1"}, Body: []byte("0123456789abcdef")}
			if err := checkEnvelope(envs[i], &lim); err != nil {
				b.Fatal(err)
			}
		}
		frame := appendFrame(nil, envs)
		b.Run(fmt.Sprintf("op=encode/envelopes=%d", n), func(b *testing.B) {
			buf := make([]byte, 0, len(frame))
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			for b.Loop() {
				buf = appendFrame(buf[:0], envs)
			}
		})
		b.Run(fmt.Sprintf("op=decode/envelopes=%d", n), func(b *testing.B) {
			d := newFrameDecoder(lim)
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			for b.Loop() {
				if err := d.decode(frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
