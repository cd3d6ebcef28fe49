package runtime_test

// Cluster benchmarks: silos in child OS processes, etcd in its own process,
// and this process only a client (runtime.Connect), all on loopback. They
// measure what a deployment sees: gRPC between processes, the etcd
// directory, placement.
//
// Each benchmark also reports how many cores the client, the silos and etcd
// kept busy during the measurement, and how many other processes of the
// machine took (other-cores; Linux only): results are comparable only when
// that is near 0.
//
// Each benchmark runs its workload once, for a fixed duration or a fixed
// amount of work, whatever b.N is: the workload runs in the first b.Loop
// iteration only (b.Loop then stops, since that iteration outlasts any
// sensible -benchtime; extra iterations do nothing). ns/op is therefore
// meaningless; read the reported metrics (calls/s, activations/s, p50-µs,
// p99-µs). `make bench` runs them next to the in-process benchmarks with
// -benchtime 3s; -benchtime 1x works as well.
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
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	goruntime "runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/cluster"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/runtimetest"
)

const (
	benchCallers = 64
	// envBenchProfile names a directory: when set, the cluster benchmarks
	// write CPU profiles of the client and of every child process there.
	envBenchProfile = "GRANARY_BENCH_PROFILE"
)

// BenchmarkClusterRemoteCall (W1-remote) measures calls from a client
// process to two silo processes: 10,000 grains activated beforehand, 64
// concurrent callers calling Probe.Ping for 10 seconds. It runs twice, on
// plaintext (tls=off) and with TLS between the client and the silos
// (tls=on: mutual TLS, ECDSA P-256 certificates), each on a cluster of its
// own; etcd is plaintext in both.
func BenchmarkClusterRemoteCall(b *testing.B) {
	b.Run("tls=off", func(b *testing.B) { benchRemoteCall(b, nil) })
	b.Run("tls=on", func(b *testing.B) { benchRemoteCall(b, newTestPKI(b)) })
}

func benchRemoteCall(b *testing.B, pki *testPKI) {
	const grains, duration = 10_000, 10 * time.Second
	workload := "W1-remote"
	if pki != nil {
		workload += "-tls"
	}
	bc := startBenchProcs(b, 2, pki)
	ctx := context.Background()
	refs := make([]testgrains.ProbeRef, grains)
	for i := range refs {
		refs[i] = testgrains.NewProbeRef(bc.client, fmt.Sprint("w1-", i))
	}
	// Activate every grain, then call each once more: a grain's first call
	// goes to a gateway that may forward it to the silo placing it, its
	// second may be redirected to the host's gateway, which the client
	// remembers from then on. The measurement sees the steady state.
	for round := range 2 {
		if st := benchRun(benchCallers, grains, 0, 0, func(i int) error { return refs[i].Ping(ctx) }); st.err != nil {
			b.Fatalf("round %d over %d grains: %d calls failed; first: %v", round, grains, st.errors, st.err)
		}
	}
	var st benchStats
	ran := false
	for b.Loop() {
		if ran {
			continue
		}
		ran = true
		stop := bc.window(b, workload)
		// Each caller walks the grains from its own offset, so that callers
		// rarely meet on one grain.
		st = benchRun(benchCallers, 0, duration, grains, func(i int) error { return refs[i%grains].Ping(ctx) })
		stop(st.calls)
	}
	if st.err != nil {
		b.Errorf("%d of %d calls failed; first: %v", st.errors, st.calls, st.err)
	}
	st.report(b, "calls/s")
}

// BenchmarkClusterActivation (W2-activation) measures activations per
// second: 200,000 grain ids never called before, called once each through
// the client by 64 concurrent callers. Each call is a real activation on
// one of two silo processes: the client sends it to a gateway, whose silo
// finds no directory entry (an etcd read) and places the grain on itself or
// forwards it to the silo it places it on, which registers it in the etcd
// directory (an etcd transaction) before the turn runs.
//
// Single activation stays strict: every registration is a create-if-absent
// transaction in etcd bound to the silo's lease, one per grain, so etcd's
// write throughput is the expected limit: one gRPC request, one raft
// proposal and one apply per registration (the test etcd runs without
// fsync, so here it is etcd's CPU, on the same two cores as everything
// else). Batching registrations into fewer transactions (nested
// create-if-absent txns) would raise it without weakening the guarantee;
// caching or skipping them would not be strict.
func BenchmarkClusterActivation(b *testing.B) {
	const fresh = 200_000
	bc := startBenchProcs(b, 2, nil)
	ctx := context.Background()
	// Warm the client's connections to both silos.
	if st := benchRun(benchCallers, 200, 0, 0, func(i int) error {
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
		st = benchRun(benchCallers, fresh, 0, 0, func(i int) error {
			return testgrains.NewProbeRef(bc.client, fmt.Sprint("w2-", i)).Ping(ctx)
		})
		stop(st.calls)
	}
	if st.err != nil {
		b.Errorf("%d of %d activations failed; first: %v", st.errors, st.calls, st.err)
	}
	// Each call was a real activation: the directory holds an entry for
	// every grain.
	if n := bc.directoryEntries(b, testgrains.ProbeType.Name); n < fresh {
		b.Errorf("the etcd directory has %d %s entries after %d activations", n, testgrains.ProbeType.Name, fresh)
	}
	st.report(b, "activations/s")
}

// benchProcs is etcd and silos in their own processes, and a client in
// this one.
type benchProcs struct {
	name   string   // cluster name
	etcd   []string // etcd endpoints
	silos  []*runtimetest.SiloProcess
	client *runtime.Client
}

// startBenchProcs starts etcd and n silos, and connects the client; with
// pki, the silos and the client talk TLS (configured as a silo host's is,
// through the GRANARY_TLS_* environment).
func startBenchProcs(b *testing.B, n int, pki *testPKI) *benchProcs {
	b.Helper()
	if testing.Short() {
		b.Skip("starts etcd and silo processes")
	}
	etcd := runtimetest.EtcdProcess(b)
	name := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	bc := &benchProcs{name: name, etcd: etcd, silos: make([]*runtimetest.SiloProcess, n)}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			o := runtimetest.SiloProcessOptions{Endpoints: etcd, Cluster: name}
			if pki != nil {
				o.Env = pki.siloEnv()
			}
			bc.silos[i] = runtimetest.StartSiloProcess(b, o)
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	ccfg := runtime.ClientConfig{Cluster: name, Etcd: runtime.EtcdConfig{Endpoints: etcd}}
	if pki != nil {
		ccfg.TLS = pki.clientTLS()
	}
	if bc.client, err = runtime.Connect(ctx, ccfg); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bc.client.Close() })
	if _, err := bc.client.View().WaitFor(ctx, func(s *cluster.Snapshot) bool { return len(s.Active()) == n }); err != nil {
		b.Fatalf("client never saw %d active silos: %v", n, err)
	}
	return bc
}

// directoryEntries counts the etcd directory entries of a grain type.
func (bc *benchProcs) directoryEntries(b *testing.B, grainType string) int64 {
	cli, err := clientv3.New(clientv3.Config{Endpoints: bc.etcd, DialTimeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, runtime.ClusterPrefix(bc.name)+"dir/"+url.PathEscape(grainType)+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		b.Fatal(err)
	}
	return resp.Count
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
// k = 0, 1, 2, ..., so that callers spread evenly over span indexes (fn
// maps them onto its grains) and rarely call the same grain at once.
func benchRun(callers, n int, duration time.Duration, span int, fn func(i int) error) benchStats {
	var (
		next    atomic.Int64
		stop    atomic.Bool
		mu      sync.Mutex
		st      benchStats
		wg      sync.WaitGroup
		errOnce sync.Once
	)
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

// window brackets a benchmark's measurement: it reports (client-cores,
// silo-cores, etcd-cores, other-cores) and logs how much CPU each process
// used during it, so one sees where the two cores went, logs the client's
// allocations per call and, with envBenchProfile set, profiles every
// process. Children are found through /proc (Linux); elsewhere only this
// process is accounted.
func (bc *benchProcs) window(b *testing.B, workload string) (stop func(calls int64)) {
	dir := os.Getenv(envBenchProfile)
	procs := benchChildren()
	self := os.Getpid()
	before := map[int]time.Duration{self: procCPU(self)}
	for pid := range procs {
		before[pid] = procCPU(pid)
	}
	busyBefore := machineBusy()
	var msBefore goruntime.MemStats
	goruntime.ReadMemStats(&msBefore)
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
		writeAllocsProfile(filepath.Join(dir, workload+"-client.allocs-begin.pprof"))
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		for pid := range procs {
			_ = syscall.Kill(pid, syscall.SIGUSR1)
		}
	}
	return func(calls int64) {
		wall := time.Since(begin)
		busy := machineBusy() - busyBefore
		used := map[int]time.Duration{}
		for pid, d := range before {
			used[pid] = procCPU(pid) - d
		}
		var ms goruntime.MemStats
		goruntime.ReadMemStats(&ms)
		if f != nil {
			pprof.StopCPUProfile()
			_ = f.Close()
			writeAllocsProfile(filepath.Join(dir, workload+"-client.allocs-end.pprof"))
			for pid := range procs {
				_ = syscall.Kill(pid, syscall.SIGUSR2)
			}
		}
		cores := func(d time.Duration) float64 { return float64(d) / float64(wall) }
		ours := used[self]
		msg := fmt.Sprintf("%s CPU (cores busy over %.1fs): client %.2f", workload, wall.Seconds(), cores(used[self]))
		byRole := map[string]time.Duration{}
		for _, role := range []string{"silo", "etcd"} {
			for pid, r := range procs {
				if r == role {
					msg += fmt.Sprintf(", %s[%d] %.2f", role, pid, cores(used[pid]))
					ours += used[pid]
					byRole[role] += used[pid]
				}
			}
		}
		b.ReportMetric(cores(used[self]), "client-cores")
		b.ReportMetric(cores(byRole["silo"]), "silo-cores")
		b.ReportMetric(cores(byRole["etcd"]), "etcd-cores")
		if busy > 0 {
			// Other processes on the machine (a build, another test) take
			// cores from the benchmark: the numbers are then not comparable.
			other := cores(max(busy-ours, 0))
			msg += fmt.Sprintf("; whole machine %.2f of %d, other processes %.2f", cores(busy), goruntime.NumCPU(), other)
			b.ReportMetric(other, "other-cores")
		}
		b.Log(msg)
		if calls > 0 {
			b.Logf("%s client: %.1f allocs/call, %.0f B/call, %d GCs", workload,
				float64(ms.Mallocs-msBefore.Mallocs)/float64(calls),
				float64(ms.TotalAlloc-msBefore.TotalAlloc)/float64(calls), ms.NumGC-msBefore.NumGC)
		}
		if f == nil {
			return
		}
		// The children write their profiles on SIGUSR2 (to a temporary
		// name, renamed when complete).
		deadline := time.Now().Add(10 * time.Second)
		for pid, role := range procs {
			from := filepath.Join(dir, fmt.Sprintf("child-%d", pid))
			for {
				if _, err := os.Stat(from + ".pprof"); err == nil || time.Now().After(deadline) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			to := filepath.Join(dir, fmt.Sprintf("%s-%s-%d", workload, role, pid))
			for _, ext := range []string{".pprof", ".allocs-begin.pprof", ".allocs-end.pprof"} {
				if err := os.Rename(from+ext, to+ext); err != nil {
					b.Errorf("profile of %s process %d: %v", role, pid, err)
				}
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

// machineBusy returns the CPU time all processors of the machine spent
// not idle so far, from /proc/stat (0 if unavailable).
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0
		}
		// idle (4), iowait (5) and steal (8) are not busy here; guest
		// time (9, 10) is already counted in user and nice.
		if i+1 == 4 || i+1 == 5 || i+1 >= 8 {
			continue
		}
		busy += n
	}
	return time.Duration(busy) * (time.Second / 100)
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

// writeAllocsProfile writes the allocation profile (cumulative since the
// process started; compare two with pprof -base) to path.
func writeAllocsProfile(path string) {
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: allocs profile:", err)
		return
	}
	defer f.Close()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		fmt.Fprintln(os.Stderr, "bench: allocs profile:", err)
	}
}

// init runs in the child processes too, before TestMain hands them to
// runtimetest.ChildMain: with envBenchProfile set, a child profiles its CPU
// between SIGUSR1 and SIGUSR2 into <dir>/child-<pid>.pprof, and writes its
// allocation profile at both signals (child-<pid>.allocs-{begin,end}.pprof).
// Without it, nothing is installed.
func init() {
	dir := os.Getenv(envBenchProfile)
	if dir == "" || os.Getenv(childRoleEnv) == "" {
		return
	}
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		base := filepath.Join(dir, fmt.Sprintf("child-%d", os.Getpid()))
		tmp := filepath.Join(dir, fmt.Sprintf(".child-%d.pprof.tmp", os.Getpid()))
		var f *os.File
		for s := range sig {
			switch {
			case s == syscall.SIGUSR1 && f == nil:
				writeAllocsProfile(base + ".allocs-begin.pprof")
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
				writeAllocsProfile(base + ".allocs-end.pprof")
				// Last: the parent waits for this name.
				_ = os.Rename(tmp, base+".pprof")
			}
		}
	}()
}
