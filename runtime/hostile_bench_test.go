package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/transport"
)

// BenchmarkMalformedFlood measures the latency of valid calls to a silo
// (one caller over the silo listener, Ping on an active grain) while another
// peer floods it with malformed requests (flooders goroutines, each sending
// the 6-byte body that declares 2^26 int64s as fast as it is answered).
// Reports the valid calls' p50/p99 and the rate of malformed requests. The
// flooding peer runs in the same process: on a small machine it competes
// with the silo for the CPU too.
func BenchmarkMalformedFlood(b *testing.B) {
	for _, bc := range []struct {
		flooders int
		valid    bool // the flood is of valid requests (Ping), to compare
	}{{0, false}, {1, false}, {16, false}, {1, true}, {16, true}} {
		flooders := bc.flooders
		kind := "malformed"
		if bc.valid {
			kind = "valid"
		}
		b.Run(fmt.Sprintf("flooders=%d/flood=%s", flooders, kind), func(b *testing.B) {
			c := benchCluster(b, endpoints)
			addr := c.Silos[0].Address()
			ctx := context.Background()
			p := testgrains.NewProbeRef(c.Client(), "victim")
			if err := p.Ping(ctx); err != nil {
				b.Fatal(err)
			}
			if err := testgrains.NewProbeRef(c.Client(), "flood").Ping(ctx); err != nil {
				b.Fatal(err)
			}
			victim, err := transport.NewClient(transport.ClientConfig{})
			if err != nil {
				b.Fatal(err)
			}
			defer victim.Close()
			attacker, err := transport.NewClient(transport.ClientConfig{})
			if err != nil {
				b.Fatal(err)
			}
			defer attacker.Close()
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var bad atomic.Int64
			if flooders > 0 {
				target := grain.ID{Type: testgrains.ProbeType.Name, Key: "flood"}
				for range flooders {
					wg.Go(func() {
						for {
							select {
							case <-stop:
								return
							default:
							}
							env := &transport.Envelope{Target: target, Method: probeSumInts,
								Body: []byte{0x91, 0xdd, 0x04, 0x00, 0x00, 0x00}, Timeout: 5 * time.Second}
							if bc.valid {
								env.Method, env.Body = 6, []byte{0x90}
							}
							_, err := attacker.Call(ctx, addr, env)
							if bc.valid && err != nil || !bc.valid && !errors.Is(err, grain.ErrBadRequest) {
								b.Errorf("flood request: %v", err)
								return
							}
							bad.Add(1)
						}
					})
				}
			}
			ping := &transport.Envelope{Target: p.ID(), Method: 6, Body: []byte{0x90}} // Probe.Ping, no arguments
			var lat []time.Duration
			b.ResetTimer()
			begin := time.Now()
			for b.Loop() {
				env := *ping
				env.Timeout = 5 * time.Second
				t0 := time.Now()
				if _, err := victim.Call(ctx, addr, &env); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			elapsed := time.Since(begin)
			b.StopTimer()
			close(stop)
			wg.Wait()
			reportLatency(b, lat, elapsed)
			b.ReportMetric(float64(bad.Load())/elapsed.Seconds(), "flood-calls/s")
		})
	}
}
