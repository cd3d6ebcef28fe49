package upgrade_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/internal/upgrade"
	"github.com/granary-rt/granary/runtime/internal/upgrade/node"
	v2 "github.com/granary-rt/granary/runtime/internal/upgrade/v2/journal"
)

var built struct {
	once sync.Once
	dir  string
	err  error
}

// removeBuilds removes the binaries buildNodes built.
func removeBuilds() {
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
}

// buildNodes builds cmd/journalv1 and cmd/journalv2 (without the race
// detector: the silos run faster) once per test binary, and returns the
// directory holding them.
func buildNodes(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "granary-journal-"); built.err != nil {
			return
		}
		const cmd = "github.com/granary-rt/granary/runtime/internal/upgrade/cmd/"
		start := time.Now()
		out, err := exec.Command("go", "build", "-o", built.dir+string(os.PathSeparator), cmd+"journalv1", cmd+"journalv2").CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("go build: %w\n%s", err, out)
			return
		}
		t.Logf("built journalv1 and journalv2 in %v", time.Since(start).Round(time.Millisecond))
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.dir
}

// proc is a child process of the test whose stdout lines are read.
type proc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	done  chan struct{}
}

func startProc(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	p := &proc{cmd: cmd, lines: make(chan string, 1<<16), done: make(chan struct{})}
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// first waits for the first line, which must start with prefix.
func (p *proc) first(t *testing.T, prefix string) string {
	t.Helper()
	select {
	case line, ok := <-p.lines:
		if !ok || !strings.HasPrefix(line, prefix) {
			t.Fatalf("%s said %q (open %t), want %s...", p.cmd.Path, line, ok, prefix)
		}
		return line
	case <-time.After(30 * time.Second):
		t.Fatalf("%s not ready after 30s", p.cmd.Path)
	}
	return ""
}

// stop closes stdin, which stops the process gracefully, and waits.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	_ = p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not stop within 30s", p.cmd.Path)
	}
}

var siloOf = regexp.MustCompile(`\(silo (v[12])-`)

// TestRollingUpgrade runs three version-1 silos and a client of each
// version, replaces the silos one at a time by version-2 ones while both
// clients call continuously, and checks every call against the rules: no
// call runs another method than the one named, every ErrUnknownMethod and
// ErrIncompatible is where the rules say (and nowhere else), calls refused
// so did not run, and no acknowledged call is missing from its grain's
// journal.
func TestRollingUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts processes")
	}
	dir := buildNodes(t)
	bin := map[string]string{"v1": filepath.Join(dir, "journalv1"), "v2": filepath.Join(dir, "journalv2")}
	name := fmt.Sprintf("rolling-%d", time.Now().UnixNano())
	etcd := strings.Join(endpoints, ",")
	silo := func(version string, i int) *proc {
		p := startProc(t, bin[version], "silo", "-etcd", etcd, "-cluster", name,
			"-silo-id", fmt.Sprintf("%s-%d", version, i), "-listen", "127.0.0.1:0")
		p.first(t, "READY ")
		return p
	}
	var silos []*proc
	for i := range 3 {
		silos = append(silos, silo("v1", i))
	}
	clients := map[string]*proc{}
	for _, v := range []string{"v1", "v2"} {
		clients[v] = startProc(t, bin[v], "client", "-etcd", etcd, "-cluster", name, "-name", "c"+v, "-grains", "8", "-workers", "3")
		clients[v].first(t, "READY")
	}
	// Collect results while the clients run.
	var mu sync.Mutex
	var results []node.Result
	var collectors sync.WaitGroup
	for v, c := range clients {
		collectors.Go(func() {
			for line := range c.lines {
				if line == "DONE" {
					continue
				}
				var r node.Result
				if err := json.Unmarshal([]byte(line), &r); err != nil {
					t.Errorf("client %s: %q: %v", v, line, err)
					continue
				}
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		})
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(results)
	}
	// Each phase runs for a second and until the clients made some calls
	// in it.
	phase := func() {
		n, start := count(), time.Now()
		for (count() < n+150 || time.Since(start) < time.Second) && time.Since(start) < 10*time.Second {
			time.Sleep(20 * time.Millisecond)
		}
	}
	phase()
	for i := range 3 {
		silos = append(silos, silo("v2", i))
		silos[i].stop(t)
		phase()
	}
	for _, c := range clients {
		c.stop(t)
	}
	collectors.Wait()
	for _, s := range silos[3:] {
		defer s.stop(t)
	}

	// The journals, read through a client of this process.
	ctx := ctxT(t)
	c, err := runtime.Connect(ctx, runtime.ClientConfig{Cluster: name, Etcd: runtime.EtcdConfig{Endpoints: endpoints}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ran := map[string]upgrade.Record{}
	for g := range 8 {
		recs, err := v2.NewJournalRef(c, fmt.Sprintf("g%d", g)).Log(ctx)
		if err != nil {
			t.Fatalf("Log of g%d: %v", g, err)
		}
		for _, r := range recs {
			if _, dup := ran[r.Call]; dup {
				t.Errorf("call %s ran twice", r.Call)
			}
			ran[r.Call] = r
		}
	}
	checkResults(t, results, ran)
}

// goName is the Go method that serves wire method m in version v.
func goName(m, v string) string {
	if m == "Append" && v == "v2" {
		return "Add"
	}
	return m
}

// checkResults checks every call's result and the journals against the
// rules.
func checkResults(t *testing.T, results []node.Result, ran map[string]upgrade.Record) {
	t.Helper()
	seen := map[string]int{} // kinds of outcome observed
	called := map[string]node.Result{}
	transient := 0
	for _, r := range results {
		called[r.Call] = r
		rec, inJournal := ran[r.Call]
		if r.Err == "" {
			// Acknowledged: it ran the method named, on a silo that has
			// it with the caller's signature, and it is in the journal.
			if r.RanMethod != goName(r.Method, r.RanVersion) {
				t.Errorf("%s: %s called %s, %s ran on %s", r.Call, r.Client, r.Method, r.RanMethod, r.RanSilo)
			}
			if (r.Method == "Note" && r.RanVersion != r.Client) || (r.Method == "Version" && r.RanVersion != "v2") {
				t.Errorf("%s: %s's %s ran on a %s silo, which has it with another signature or not at all", r.Call, r.Client, r.Method, r.RanVersion)
			}
			if !inJournal {
				t.Errorf("%s: acknowledged %s of %s is not in the journal: an acknowledged write was lost", r.Call, r.Method, r.Key)
			}
			seen[fmt.Sprintf("%s %s ok on %s", r.Client, r.Method, r.RanVersion)]++
			continue
		}
		unknown, incompatible := r.Code == grain.CodeOf(grain.ErrUnknownMethod), r.Code == grain.CodeOf(grain.ErrIncompatible)
		if !unknown && !incompatible {
			transient++ // a silo stopping or starting: the rules say nothing about these
			if r.Outcome == grain.OutcomeNotRun.String() && inJournal {
				t.Errorf("%s: %s failed with %q (did not run), but ran", r.Call, r.Method, r.Err)
			}
			continue
		}
		m := siloOf.FindStringSubmatch(r.Err)
		if m == nil {
			t.Errorf("%s: error %q does not name the silo", r.Call, r.Err)
			continue
		}
		served := m[1]
		switch {
		case unknown && (r.Client != "v2" || r.Method != "Version" || served != "v1"):
			t.Errorf("%s: %s's %s on a %s silo failed with ErrUnknownMethod: %s", r.Call, r.Client, r.Method, served, r.Err)
		case unknown && !strings.Contains(r.Err, "upgrade.Journal has no method Version"):
			t.Errorf("%s: ErrUnknownMethod does not name the method: %s", r.Call, r.Err)
		case incompatible && (r.Method != "Note" || served == r.Client):
			t.Errorf("%s: %s's %s on a %s silo failed with ErrIncompatible: %s", r.Call, r.Client, r.Method, served, r.Err)
		case incompatible && (!strings.Contains(r.Err, noteV1) || !strings.Contains(r.Err, noteV2)):
			t.Errorf("%s: ErrIncompatible does not name both signatures: %s", r.Call, r.Err)
		}
		if r.Outcome != grain.OutcomeNotRun.String() {
			t.Errorf("%s: %s has outcome %s, want did not run", r.Call, r.Err, r.Outcome)
		}
		if inJournal {
			t.Errorf("%s: refused with %s, but %s ran", r.Call, r.Code, rec.Method)
		}
		seen[fmt.Sprintf("%s %s %s on %s", r.Client, r.Method, r.Code, served)]++
	}
	// Nothing ran that no client called, or another method than called.
	for id, rec := range ran {
		r, ok := called[id]
		if !ok {
			t.Errorf("journal has call %s (%s on %s), which no client reported", id, rec.Method, rec.Version)
			continue
		}
		if rec.Method != goName(r.Method, rec.Version) {
			t.Errorf("%s: %s called %s, %s ran on a %s silo", id, r.Client, r.Method, rec.Method, rec.Version)
		}
	}
	// Every case of the rules happened at least once.
	for _, want := range []string{
		"v1 Append ok on v1", "v1 Append ok on v2", "v2 Append ok on v1", "v2 Append ok on v2",
		"v1 Note ok on v1", "v2 Note ok on v2", "v2 Version ok on v2",
		"v1 Note incompatible_method on v2", "v2 Note incompatible_method on v1", "v2 Version unknown_method on v1",
	} {
		if seen[want] == 0 {
			t.Errorf("no call was %q", want)
		}
	}
	t.Logf("%d calls, %d in journals; %d failed while silos were replaced; %v", len(results), len(ran), transient, seen)
	if transient > len(results)/5 {
		t.Errorf("%d of %d calls failed for other reasons than the rules", transient, len(results))
	}
}
