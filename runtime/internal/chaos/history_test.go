package chaos

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

type opKind uint8

const (
	opGet opKind = iota
	opPut
)

func (k opKind) String() string {
	if k == opPut {
		return "put"
	}
	return "get"
}

// op is one call in a history. Times are nanoseconds since the history
// began, on this process's monotonic clock.
type op struct {
	Client int    `json:"client"`
	Key    string `json:"key"`
	Kind   opKind `json:"kind"`
	// Value is what a put wrote or what a get read.
	Value int64 `json:"value"`
	Call  int64 `json:"call"`
	// Return is when the reply arrived; for an op whose outcome is
	// unknown, when the caller gave up.
	Return int64 `json:"return"`
	// OK: the call succeeded. A failed get is dropped from the check; a
	// failed put may or may not have happened (its outcome is unknown).
	OK   bool   `json:"ok"`
	Silo string `json:"silo,omitempty"`
	Err  string `json:"err,omitempty"`
}

// event is a fault the nemesis injected or healed, for the saved history.
type event struct {
	At   int64  `json:"at"`
	What string `json:"what"`
}

// maxOps bounds a history (the workers are rate-limited far below it).
const maxOps = 2_000_000

// history records ops from concurrent clients.
type history struct {
	start time.Time

	mu      sync.Mutex
	ops     []op
	events  []event
	dropped int
}

func newHistory() *history { return &history{start: time.Now()} }

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(o op) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.ops) >= maxOps {
		h.dropped++
		return
	}
	h.ops = append(h.ops, o)
}

func (h *history) note(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, event{At: h.now(), What: fmt.Sprintf(format, args...)})
}

// stats summarises a history.
type stats struct {
	ops, ok, unknown, failedGets int
	// overflow counts ops not recorded because the history was full: a
	// check of such a history proves nothing.
	overflow int
}

func (s stats) String() string {
	out := fmt.Sprintf("%d ops: %d acknowledged, %d writes of unknown outcome, %d failed reads (dropped)",
		s.ops, s.ok, s.unknown, s.failedGets)
	if s.overflow > 0 {
		out += fmt.Sprintf("; %d ops NOT RECORDED (history full)", s.overflow)
	}
	return out
}

func (h *history) snapshot() ([]op, []event, stats) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ops := append([]op(nil), h.ops...)
	events := append([]event(nil), h.events...)
	st := stats{ops: len(ops), overflow: h.dropped}
	for _, o := range ops {
		switch {
		case o.OK:
			st.ok++
		case o.Kind == opPut:
			st.unknown++
		default:
			st.failedGets++
		}
	}
	return ops, events, st
}

// regInput and regOutput are porcupine's view of an op.
type regInput struct {
	key   string
	kind  opKind
	value int64 // written by a put
}

type regOutput struct {
	value   int64 // read by a get
	unknown bool  // a put whose outcome is unknown
}

// registerModel is a register per key, 0 before the first write.
var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, o := range history {
			k := o.Input.(regInput).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], o)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return int64(0) },
	Step: func(state, input, output any) (bool, any) {
		in, out := input.(regInput), output.(regOutput)
		if in.kind == opPut {
			return true, in.value
		}
		return out.value == state.(int64), state
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(regInput), output.(regOutput)
		switch {
		case in.kind == opGet:
			return fmt.Sprintf("get(%s) -> %d", in.key, out.value)
		case out.unknown:
			return fmt.Sprintf("put(%s, %d) outcome unknown", in.key, in.value)
		default:
			return fmt.Sprintf("put(%s, %d)", in.key, in.value)
		}
	},
	DescribeState: func(state any) string { return fmt.Sprint(state) },
}

// operations converts a history for porcupine: failed gets are dropped,
// and a put whose outcome is unknown gets a return time after the end of
// the history, so that it may take effect at any time after its call, or
// never (porcupine linearizes it at the end, unobserved).
//
// A put of unknown outcome whose value no successful get returned is
// dropped as well: every put writes a value of its own, so such a put can
// be linearized as never having happened (or, equivalently, right before
// the next put of its key), and the history is linearizable with it if
// and only if it is without it. Most unknown puts are of this kind, and
// each one porcupine must keep pending to the end of the history slows
// the search down.
func operations(ops []op) []porcupine.Operation {
	var end int64
	read := map[int64]bool{}
	for _, o := range ops {
		end = max(end, o.Return)
		if o.Kind == opGet && o.OK {
			read[o.Value] = true
		}
	}
	out := make([]porcupine.Operation, 0, len(ops))
	for _, o := range ops {
		if !o.OK && (o.Kind == opGet || !read[o.Value]) {
			continue
		}
		ret := o.Return
		if !o.OK {
			ret = end + 1
		}
		out = append(out, porcupine.Operation{
			ClientId: o.Client,
			Input:    regInput{key: o.Key, kind: o.Kind, value: o.Value},
			Call:     o.Call,
			Output:   regOutput{value: o.Value, unknown: !o.OK},
			Return:   ret,
			Metadata: o.Silo + " " + o.Err,
		})
	}
	return out
}

// checkResult is the outcome of a linearizability check.
type checkResult struct {
	result   porcupine.CheckResult
	took     time.Duration
	badKeys  []string // keys whose own history is not linearizable
	htmlPath string   // the visualization, written when the result is not Ok (or saved)
	rawPath  string   // the raw history (JSON), likewise
}

// check checks ops for linearizability within timeout and, unless the
// history is linearizable (or always, if save), writes the raw history and
// porcupine's visualization to dir.
func check(dir string, ops []op, events []event, timeout time.Duration, save bool) (checkResult, error) {
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(registerModel, operations(ops), timeout)
	cr := checkResult{result: res, took: time.Since(start)}
	if res == porcupine.Illegal {
		for _, part := range registerModel.Partition(operations(ops)) {
			if porcupine.CheckOperationsTimeout(registerModel, part, min(timeout, 20*time.Second)) == porcupine.Illegal {
				cr.badKeys = append(cr.badKeys, part[0].Input.(regInput).key)
			}
		}
	}
	if res == porcupine.Ok && !save {
		return cr, nil
	}
	cr.rawPath = filepath.Join(dir, "history.json")
	raw, err := json.MarshalIndent(struct {
		Ops    []op    `json:"ops"`
		Events []event `json:"events"`
	}{ops, events}, "", " ")
	if err != nil {
		return cr, err
	}
	if err := os.WriteFile(cr.rawPath, raw, 0o644); err != nil {
		return cr, err
	}
	cr.htmlPath = filepath.Join(dir, "history.html")
	if err := porcupine.VisualizePath(registerModel, info, cr.htmlPath); err != nil {
		return cr, fmt.Errorf("visualize: %w", err)
	}
	return cr, nil
}

// errorDetails matches what varies between errors of one kind: grain keys,
// silo ids, addresses, numbers.
var errorDetails = regexp.MustCompile(`k[0-9]+|f[0-9]+|silo[0-9]+\.[0-9]+|[0-9]+(\.[0-9]+)*(:[0-9]+)?`)

// errorSummary counts the errors of failed calls by kind (the message
// with keys, silos and numbers blanked) and describes the top n.
func errorSummary(ops []op, n int) string {
	counts := map[string]int{}
	for _, o := range ops {
		if !o.OK {
			msg := o.Err
			if len(msg) > 160 {
				msg = msg[:160]
			}
			counts[o.Kind.String()+": "+errorDetails.ReplaceAllString(msg, "_")]++
		}
	}
	kinds := make([]string, 0, len(counts))
	for k := range counts {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool { return counts[kinds[i]] > counts[kinds[j]] })
	var b strings.Builder
	for i, k := range kinds {
		if i == n {
			fmt.Fprintf(&b, "\n\t(%d more kinds)", len(kinds)-n)
			break
		}
		fmt.Fprintf(&b, "\n\t%d× %s", counts[k], k)
	}
	return b.String()
}

// envRecheck names a history.json a run saved: TestRecheckHistory checks
// it again (to try a change of the checker on a real history).
const envRecheck = "GRANARY_CHAOS_RECHECK"

func TestRecheckHistory(t *testing.T) {
	path := os.Getenv(envRecheck)
	if path == "" {
		t.Skipf("set %s to a saved history.json to check it again", envRecheck)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var saved struct {
		Ops    []op    `json:"ops"`
		Events []event `json:"events"`
	}
	if err := json.Unmarshal(raw, &saved); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	res, err := check(t.TempDir(), saved.Ops, saved.Events, 5*time.Minute, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d ops (%d given to porcupine): %s in %v; keys not linearizable: %v",
		len(saved.Ops), len(operations(saved.Ops)), res.result, res.took.Round(time.Millisecond), res.badKeys)
	if res.result != porcupine.Ok {
		t.Errorf("not linearizable (%s)", res.result)
	}
}
