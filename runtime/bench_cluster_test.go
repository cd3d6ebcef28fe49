package runtime_test

// Cluster benchmarks: silos in child OS processes, etcd in its own process,
// and this process only a client (runtime.Connect), all on loopback. They
// measure what a deployment sees: gRPC between processes, the etcd
// directory, placement.
//
// Each benchmark also logs how many cores each process (client, silos,
// etcd) kept busy during the measurement.
//
// Each benchmark runs its workload once, for a fixed duration or a fixed
// amount of work, whatever b.N is: the workload runs in the first b.Loop
// iteration only (b.Loop then stops, since that iteration outlasts any
// sensible -benchtime; extra iterations do nothing). ns/op is therefore
// meaningless; read the reported metrics (calls/s, activations/s, p50-µs,
// p99-µs). `make bench` runs them with -benchtime=1x.
//
// Profiling: with GRANARY_BENCH_PROFILE=<dir> in the environment, each
// benchmark writes CPU profiles covering only its measurement window: one of
// this (client) process, <dir>/<workload>-client.pprof, and one of each
// child, <dir>/<workload>-{silo,etcd}-<pid>.pprof. Read them with
// `go tool pprof -top <test binary> <profile>` (build the binary with
// `go test -c -o runtime.test ./runtime/` to have its symbols at hand).

import (
	"context"
	"fmt"
	"math"
	"math/bits"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/cluster"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/runtimetest"
)

const (
	benchCallers = 64
	// envBenchProfile names a directory: when set, the cluster benchmarks
	// write CPU profiles of the client and of every silo process there.
	envBenchProfile = "GRANARY_BENCH_PROFILE"
)

// BenchmarkClusterRemoteCall (W1-remote) measures calls from a client
// process to two silo processes: 10,000 grains activated beforehand, 64
// concurrent callers calling Probe.Ping for 10 seconds.
func BenchmarkClusterRemoteCall(b *testing.B) {
	const grains, duration = 10_000, 10 * time.Second
	bc := startBenchProcs(b, 2)
	ctx := context.Background()
	refs := make([]testgrains.ProbeRef, grains)
	for i := range refs {
		refs[i] = testgrains.NewProbeRef(bc.client, fmt.Sprint("w1-", i))
	}
	// Activate every grain, and warm the client's directory cache and
	// connections.
	if st := benchRun(benchCallers, grains, 0, func(i int) error { return refs[i].Ping(ctx) }); st.err != nil {
		b.Fatalf("activating %d grains: %d calls failed; first: %v", grains, st.errors, st.err)
	}
	var st benchStats
	ran := false
	for b.Loop() {
		if ran {
			continue
		}
		ran = true
		stop := bc.window(b, "W1-remote")
		// Each caller walks the grains from its own offset, so that callers
		// rarely meet on one grain.
		st = benchRun(benchCallers, 0, duration, func(i int) error { return refs[i%grains].Ping(ctx) })
		stop()
	}
	if st.err != nil {
		b.Errorf("%d of %d calls failed; first: %v", st.errors, st.calls, st.err)
	}
	st.report(b, "calls/s")
}

// BenchmarkClusterActivation (W2-activation) measures activations per
// second: 200,000 grain ids never called before, called once each through
// the client by 64 concurrent callers. Each call is a real activation on
// one of two silo processes: the client finds no directory entry (an etcd
// read), places the grain on a silo, which registers it in the etcd
// directory (an etcd transaction) before the turn runs.
//
// Single activation stays strict: every registration is a
// create-if-absent transaction bound to the silo's lease, one per grain, so
// etcd's write throughput (one raft proposal and fsync-batched WAL append
// per registration, on the same two cores here) is the expected limit.
// Batching registrations into fewer transactions would raise it without
// weakening the guarantee; caching or skipping them would not be strict.
func BenchmarkClusterActivation(b *testing.B) {
	const fresh = 200_000
	bc := startBenchProcs(b, 2)
	ctx := context.Background()
	// Warm the client's connections to both silos.
	if st := benchRun(benchCallers, 200, 0, func(i int) error {
		return testgrains.NewProbeRef(bc.client, fmt.Sprint("w2-warm-", i)).Ping(ctx)
	}); st.err != nil {
		b.Fatalf("warm-up: %v", st.err)
	}
	var st benchStats
	ran := false
	for b.Loop() {
		if ran {
			continue
		}
		ran = true
		stop := bc.window(b, "W2-activation")
		st = benchRun(benchCallers, fresh, 0, func(i int) error {
			return testgrains.NewProbeRef(bc.client, fmt.Sprint("w2-", i)).Ping(ctx)
		})
		stop()
	}
	if st.err != nil {
		b.Errorf("%d of %d activations failed; first: %v", st.errors, st.calls, st.err)
	}
	st.report(b, "activations/s")
}

// benchProcs is etcd and silos in their own processes, and a client in
// this one.
type benchProcs struct {
	silos  []*runtimetest.SiloProcess
	client *runtime.Client
}

func startBenchProcs(b *testing.B, n int) *benchProcs {
	b.Helper()
	if testing.Short() {
		b.Skip("starts etcd and silo processes")
	}
	etcd := runtimetest.EtcdProcess(b)
	name := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	bc := &benchProcs{silos: make([]*runtimetest.SiloProcess, n)}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			bc.silos[i] = runtimetest.StartSiloProcess(b, runtimetest.SiloProcessOptions{Endpoints: etcd, Cluster: name})
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	if bc.client, err = runtime.Connect(ctx, runtime.ClientConfig{Cluster: name, Etcd: runtime.EtcdConfig{Endpoints: etcd}}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bc.client.Close() })
	if _, err := bc.client.View().WaitFor(ctx, func(s *cluster.Snapshot) bool { return len(s.Active()) == n }); err != nil {
		b.Fatalf("client never saw %d active silos: %v", n, err)
	}
	return bc
}

// benchStats is the outcome of benchRun.
type benchStats struct {
	calls, errors int64
	err           error // the first error
	elapsed       time.Duration
	lat           latencyHistogram
}

// report reports the rate of successful calls (in unit) and the p50/p99
// latency of every call.
func (st *benchStats) report(b *testing.B, unit string) {
	if st.calls == 0 || st.elapsed <= 0 {
		return
	}
	b.ReportMetric(float64(st.calls-st.errors)/st.elapsed.Seconds(), unit)
	b.ReportMetric(float64(st.lat.quantile(0.50))/1e3, "p50-µs")
	b.ReportMetric(float64(st.lat.quantile(0.99))/1e3, "p99-µs")
}

// benchRun runs fn from callers goroutines and measures each call. With
// n > 0 it calls fn(0) .. fn(n-1), each once, spread over the callers. With
// n == 0 it runs for duration: caller c calls fn(c*span/callers+k) for
// k = 0, 1, 2, ... (span is duration/100µs, wide enough that callers
// rarely call the same index; fn maps it onto its grains).
func benchRun(callers, n int, duration time.Duration, fn func(i int) error) benchStats {
	var (
		next    atomic.Int64
		stop    atomic.Bool
		mu      sync.Mutex
		st      benchStats
		wg      sync.WaitGroup
		errOnce sync.Once
	)
	span := int(duration / (100 * time.Microsecond))
	begin := time.Now()
	if duration > 0 {
		t := time.AfterFunc(duration, func() { stop.Store(true) })
		defer t.Stop()
	}
	for c := range callers {
		wg.Go(func() {
			h := new(latencyHistogram)
			var calls, errs int64
			call := func(i int) {
				t0 := time.Now()
				err := fn(i)
				h.record(time.Since(t0))
				calls++
				if err != nil {
					errs++
					errOnce.Do(func() { st.err = err })
				}
			}
			if n > 0 {
				for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
					call(i)
				}
			} else {
				for i := c * span / callers; !stop.Load(); i++ {
					call(i)
				}
			}
			mu.Lock()
			st.calls += calls
			st.errors += errs
			st.lat.merge(h)
			mu.Unlock()
		})
	}
	wg.Wait()
	st.elapsed = time.Since(begin)
	return st
}

// latencyHistogram is a log-linear histogram of durations in nanoseconds:
// 32 buckets per power of two, so a quantile is off by at most 1/32 (3%).
// Recording allocates nothing, so measuring does not load the collector.
type latencyHistogram struct {
	counts [64 * latencySub]uint64
	n      uint64
}

const latencySubBits = 5
const latencySub = 1 << latencySubBits

func latencyBucket(v uint64) int {
	if v < latencySub {
		return int(v)
	}
	e := bits.Len64(v) - latencySubBits - 1 // v>>e is in [latencySub, 2*latencySub)
	return (e+1)*latencySub + int(v>>e) - latencySub
}

// latencyValue is the middle of bucket i.
func latencyValue(i int) uint64 {
	if i < latencySub {
		return uint64(i)
	}
	e := i/latencySub - 1
	m := uint64(i%latencySub + latencySub)
	return m<<e + (uint64(1)<<e)/2
}

func (h *latencyHistogram) record(d time.Duration) {
	h.counts[latencyBucket(uint64(max(d, 0)))]++
	h.n++
}

func (h *latencyHistogram) merge(o *latencyHistogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the q-quantile in nanoseconds.
func (h *latencyHistogram) quantile(q float64) uint64 {
	rank := uint64(math.Ceil(q * float64(h.n)))
	var seen uint64
	for i, c := range h.counts {
		if seen += c; c > 0 && seen >= rank {
			return latencyValue(i)
		}
	}
	return 0
}

// window brackets a benchmark's measurement: it logs how much CPU each
// process of the cluster used during it (so one sees which process the two
// cores went to) and, with envBenchProfile set, profiles the CPU of every
// process. Children are found through /proc (Linux); elsewhere only this
// process is accounted.
func (bc *benchProcs) window(b *testing.B, workload string) (stop func()) {
	dir := os.Getenv(envBenchProfile)
	procs := benchChildren()
	self := os.Getpid()
	before := map[int]time.Duration{self: procCPU(self)}
	for pid := range procs {
		before[pid] = procCPU(pid)
	}
	begin := time.Now()
	var f *os.File
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		var err error
		if f, err = os.Create(filepath.Join(dir, workload+"-client.pprof")); err != nil {
			b.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		for pid := range procs {
			_ = syscall.Kill(pid, syscall.SIGUSR1)
		}
	}
	return func() {
		wall := time.Since(begin)
		if f != nil {
			pprof.StopCPUProfile()
			_ = f.Close()
			for pid := range procs {
				_ = syscall.Kill(pid, syscall.SIGUSR2)
			}
		}
		share := func(pid int) string {
			return fmt.Sprintf("%.2f", float64(procCPU(pid)-before[pid])/float64(wall))
		}
		msg := fmt.Sprintf("%s CPU (cores busy over %.1fs): client %s", workload, wall.Seconds(), share(self))
		for _, role := range []string{"silo", "etcd"} {
			for pid, r := range procs {
				if r == role {
					msg += fmt.Sprintf(", %s[%d] %s", role, pid, share(pid))
				}
			}
		}
		b.Log(msg)
		if f == nil {
			return
		}
		// The children write their profiles on SIGUSR2 (to a temporary
		// name, renamed when complete).
		deadline := time.Now().Add(10 * time.Second)
		for pid, role := range procs {
			from := filepath.Join(dir, fmt.Sprintf("child-%d.pprof", pid))
			for {
				if _, err := os.Stat(from); err == nil || time.Now().After(deadline) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			to := filepath.Join(dir, fmt.Sprintf("%s-%s-%d.pprof", workload, role, pid))
			if err := os.Rename(from, to); err != nil {
				b.Errorf("profile of %s process %d: %v", role, pid, err)
			}
		}
		b.Logf("%s CPU profiles in %s", workload, dir)
	}
}

// childRoleEnv is runtimetest's marker of a child process: its value is the
// child's role ("silo", "etcd").
const childRoleEnv = "GRANARY_RUNTIMETEST_CHILD"

// benchChildren returns the child processes runtimetest started for this
// process: pid -> role.
func benchChildren() map[int]string {
	out := map[int]string{}
	ents, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		if ppid, ok := procStatField(pid, 4); !ok || int(ppid) != self {
			continue
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			continue
		}
		for _, kv := range strings.Split(string(env), "\x00") {
			if role, ok := strings.CutPrefix(kv, childRoleEnv+"="); ok {
				out[pid] = role
			}
		}
	}
	return out
}

// procCPU returns the user+system CPU time of process pid so far.
func procCPU(pid int) time.Duration {
	u, ok1 := procStatField(pid, 14)
	s, ok2 := procStatField(pid, 15)
	if !ok1 || !ok2 {
		return 0
	}
	return time.Duration(u+s) * (time.Second / 100) // USER_HZ is 100 on Linux
}

// procStatField returns field n (1-based, as in proc(5)) of
// /proc/<pid>/stat.
func procStatField(pid, n int) (int64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3
	if n-3 >= len(f) || n < 3 {
		return 0, false
	}
	v, err := strconv.ParseInt(f[n-3], 10, 64)
	return v, err == nil
}

// init runs in the child processes too, before TestMain hands them to
// runtimetest.ChildMain: with envBenchProfile set, a child profiles its CPU
// between SIGUSR1 and SIGUSR2 into <dir>/child-<pid>.pprof. Without it,
// nothing is installed.
func init() {
	dir := os.Getenv(envBenchProfile)
	if dir == "" || os.Getenv(childRoleEnv) == "" {
		return
	}
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		tmp := filepath.Join(dir, fmt.Sprintf(".child-%d.pprof.tmp", os.Getpid()))
		var f *os.File
		for s := range sig {
			switch {
			case s == syscall.SIGUSR1 && f == nil:
				var err error
				if f, err = os.Create(tmp); err != nil {
					fmt.Fprintln(os.Stderr, "bench: child profile:", err)
					continue
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					fmt.Fprintln(os.Stderr, "bench: child profile:", err)
				}
			case s == syscall.SIGUSR2 && f != nil:
				pprof.StopCPUProfile()
				_ = f.Close()
				f = nil
				_ = os.Rename(tmp, filepath.Join(dir, fmt.Sprintf("child-%d.pprof", os.Getpid())))
			}
		}
	}()
}
