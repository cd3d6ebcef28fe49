package runtime_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/runtimetest"
)

// BenchmarkMalformedFlood measures how a silo serves well-behaved callers
// while one peer floods it with malformed requests: bodies that are not
// msgpack, malformed method names, unknown grain types, and garbage frames on
// fresh streams (each of which ends its stream). 8 callers on a client
// connected through the silo's gateway call Probe.Ping on 100 active
// grains, alternately for a second alone (unloaded) and for a second
// while the flood runs, three times each. Reports the p99 latency of both phases and their ratio
// (goal: flooded within 2x of unloaded), and the malformed requests per
// second the silo answered; with the silo's default budget of malformed
// requests per connection (transport.ServerConfig.MalformedPerSecond) and
// with none. Its workload runs once whatever -benchtime says.
func BenchmarkMalformedFlood(b *testing.B) {
	for _, bc := range []struct {
		name string
		rate int
	}{{"malformed-budget=default", 0}, {"malformed-budget=off", -1}} {
		b.Run(bc.name, func(b *testing.B) { benchFlood(b, bc.rate) })
	}
}

func benchFlood(b *testing.B, rate int) {
	const callers, grains, rounds, phaseDur = 8, 100, 3, time.Second
	for b.Loop() {
		obs := testgrains.NewObserver()
		c := runtimetest.NewCluster(b, 1, runtimetest.Options{
			Config: runtime.Config{Etcd: runtime.EtcdConfig{Endpoints: endpoints},
				Transport: runtime.TransportConfig{MalformedPerSecond: rate}},
			Register: func(s *runtime.Silo) { testgrains.RegisterProbe(s, testgrains.NewProbe(obs)) },
		})
		addr := c.Silos[0].Address()
		ctx := context.Background()
		client, err := runtime.Connect(ctx, runtime.ClientConfig{Gateways: []string{addr}})
		if err != nil {
			b.Fatal(err)
		}
		refs := make([]testgrains.ProbeRef, grains)
		for i := range refs {
			refs[i] = testgrains.NewProbeRef(client, fmt.Sprint("flood-", i))
			if err := refs[i].Ping(ctx); err != nil {
				b.Fatal(err)
			}
		}
		floodPhase(b, refs, callers, phaseDur/4) // warm up
		// Alternate unloaded and flooded phases, so that a change in what
		// else the machine runs weighs on both alike.
		var unloaded, flooded []time.Duration
		var answered, streams atomic.Int64
		var floodTime time.Duration
		for range rounds {
			unloaded = append(unloaded, floodPhase(b, refs, callers, phaseDur)...)
			stop := startFlood(b, addr, &answered, &streams)
			began := time.Now()
			flooded = append(flooded, floodPhase(b, refs, callers, phaseDur)...)
			floodTime += time.Since(began)
			stop()
		}
		client.Close()
		slices.Sort(unloaded)
		slices.Sort(flooded)
		elapsed := floodTime

		p99 := func(lat []time.Duration) float64 { return float64(lat[len(lat)*99/100].Microseconds()) }
		p50 := func(lat []time.Duration) float64 { return float64(lat[len(lat)/2].Microseconds()) }
		b.ReportMetric(p99(unloaded), "unloaded-p99-µs")
		b.ReportMetric(p99(flooded), "flooded-p99-µs")
		b.ReportMetric(p99(flooded)/max(1, p99(unloaded)), "p99-ratio")
		b.ReportMetric(p50(unloaded), "unloaded-p50-µs")
		b.ReportMetric(p50(flooded), "flooded-p50-µs")
		b.ReportMetric(float64(len(unloaded))/(rounds*phaseDur).Seconds(), "unloaded-calls/s")
		b.ReportMetric(float64(len(flooded))/elapsed.Seconds(), "flooded-calls/s")
		b.ReportMetric(float64(answered.Load())/elapsed.Seconds(), "malformed/s")
		b.ReportMetric(float64(streams.Load())/elapsed.Seconds(), "garbage-streams/s")
	}
}

// startFlood starts one peer flooding the silo at addr: two streams
// sending frames of malformed requests (and reading the answers, counted in
// answered), and garbage frames on fresh streams of a third connection
// (counted in streams). It returns the function that stops it.
func startFlood(b *testing.B, addr string, answered, streams *atomic.Int64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	flood := malformedFrame(b)
	for range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		st, err := rawConn(b, addr).NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true},
			"/granary.Transport/Connect", grpc.ForceCodecV2(rawCodec{}))
		if err != nil {
			b.Fatal(err)
		}
		wg.Go(func() {
			for {
				var m []byte
				if err := st.RecvMsg(&m); err != nil {
					return
				}
				answered.Add(int64(frameLen(m)))
			}
		})
		wg.Go(func() {
			defer cancel()
			for {
				select {
				case <-done:
					return
				default:
				}
				if err := st.SendMsg(flood); err != nil {
					return
				}
			}
		})
	}
	cc := rawConn(b, addr)
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			st, err := cc.NewStream(sctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true},
				"/granary.Transport/Connect", grpc.ForceCodecV2(rawCodec{}))
			if err == nil && st.SendMsg([]byte("\xc1 not a frame")) == nil {
				var m []byte
				_ = st.RecvMsg(&m) // the silo ends the stream
				streams.Add(1)
			}
			cancel()
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// malformedFrame is a frame of 256 malformed requests: bodies that are
// not msgpack, a method name that is not UTF-8, an unknown grain type.
// (An unknown method is not malformed: callers of another version of an
// interface send them in good faith.)
func malformedFrame(tb testing.TB) []byte {
	probe := testgrains.ProbeType.Name
	envs := make([][]any, 256)
	for i := range envs {
		id := uint64(i + 1)
		switch i % 4 {
		case 0:
			envs[i] = rawRequest(id, grain.ID{Type: probe, Key: "m"}, "Echo", time.Second, []byte{0xc1}) // Echo, bad body
		case 1:
			envs[i] = rawRequest(id, grain.ID{Type: probe, Key: "m"}, "Ping\xff", time.Second, []byte{0x90}) // bad method name
		case 2:
			envs[i] = rawRequest(id, grain.ID{Type: "no.Such", Key: "m"}, "Add", time.Second, []byte{0x90}) // no such type
		case 3:
			envs[i] = rawRequest(id, grain.ID{Type: probe, Key: "m"}, "Ping", time.Second, []byte{0xc1}) // Ping, bad body
		}
	}
	return rawFrame(tb, envs...)
}

// frameLen reads how many envelopes a frame, [1, [envelope, ...]], holds.
func frameLen(f []byte) int {
	if len(f) < 3 || f[0] != 0x92 {
		return 0
	}
	switch h := f[2]; {
	case h >= 0x90 && h <= 0x9f:
		return int(h - 0x90)
	case h == 0xdc && len(f) >= 5:
		return int(f[3])<<8 | int(f[4])
	case h == 0xdd && len(f) >= 7:
		return int(f[3])<<24 | int(f[4])<<16 | int(f[5])<<8 | int(f[6])
	}
	return 0
}

// floodPhase runs callers calling refs for d and returns their latencies.
func floodPhase(b *testing.B, refs []testgrains.ProbeRef, callers int, d time.Duration) []time.Duration {
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	var next atomic.Int64
	for range callers {
		wg.Go(func() {
			local := make([]time.Duration, 0, 1<<14)
			for i := int(next.Add(17)); time.Now().Before(stop); i++ {
				t0 := time.Now()
				if err := refs[i%len(refs)].Ping(context.Background()); err != nil {
					b.Error(err)
					return
				}
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return lat
}
