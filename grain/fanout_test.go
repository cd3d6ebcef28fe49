package grain_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/granary-rt/granary/grain"
)

// inflight counts concurrent calls and remembers the most seen at once.
type inflight struct {
	now, peak atomic.Int64
}

func (f *inflight) enter() {
	n := f.now.Add(1)
	for p := f.peak.Load(); n > p && !f.peak.CompareAndSwap(p, n); p = f.peak.Load() {
	}
}

func (f *inflight) leave() { f.now.Add(-1) }

var errOdd = errors.New("odd key")

func TestFanOutSets(t *testing.T) {
	var keys []int
	for i := range 100 {
		keys = append(keys, i)
	}
	blocked := map[int]bool{7: true, 27: true, 47: true, 67: true, 87: true}
	var wantOK, wantFailed, wantUnanswered []int
	for _, k := range keys {
		switch {
		case blocked[k]:
			wantUnanswered = append(wantUnanswered, k)
		case k%10 == 3:
			wantFailed = append(wantFailed, k)
		default:
			wantOK = append(wantOK, k)
		}
	}
	var f inflight
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	res := grain.FanOut(ctx, keys, func(ctx context.Context, k int) (string, error) {
		f.enter()
		defer f.leave()
		switch {
		case blocked[k]:
			<-ctx.Done()
			return "", fmt.Errorf("key %d: %w", k, ctx.Err())
		case k%10 == 3:
			time.Sleep(time.Millisecond)
			return "", fmt.Errorf("key %d: %w", k, errOdd)
		}
		time.Sleep(time.Millisecond)
		return fmt.Sprint("v", k), nil
	}, grain.MaxInFlight(8))

	if got := sortedKeys(res.Answered); !slices.Equal(got, wantOK) {
		t.Errorf("answered = %v\nwant %v", got, wantOK)
	}
	for k, v := range res.Answered {
		if v != fmt.Sprint("v", k) {
			t.Errorf("answered[%d] = %q", k, v)
		}
	}
	if got := sortedKeys(res.Failed); !slices.Equal(got, wantFailed) {
		t.Errorf("failed = %v\nwant %v", got, wantFailed)
	}
	for k, err := range res.Failed {
		if !errors.Is(err, errOdd) {
			t.Errorf("failed[%d] = %v, want errOdd", k, err)
		}
	}
	if !slices.Equal(res.Unanswered, wantUnanswered) || len(res.NotStarted) != 0 {
		t.Errorf("unanswered = %v, not started = %v; want %v and none", res.Unanswered, res.NotStarted, wantUnanswered)
	}
	if p := f.peak.Load(); p > 8 || p < 6 {
		t.Errorf("at most %d calls in flight, want 6 to 8 (bound 8)", p)
	}
	if n := f.now.Load(); n != 0 {
		t.Errorf("FanOut returned with %d calls running", n)
	}
	if res.Complete() {
		t.Error("Complete() = true with unanswered calls")
	}
	err := res.Err()
	if !errors.Is(err, errOdd) || !strings.Contains(err.Error(), "85 answered, 10 failed, 5 unanswered, 0 not started") ||
		!strings.Contains(err.Error(), "first failure: 3: key 3") {
		t.Errorf("Err() = %v", err)
	}
}

// Calls not started before the context ends are never started.
func TestFanOutNotStarted(t *testing.T) {
	keys := []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}
	var mu sync.Mutex
	var called []string
	var f inflight
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	res := grain.FanOut(ctx, keys, func(ctx context.Context, k string) (int, error) {
		f.enter()
		defer f.leave()
		mu.Lock()
		called = append(called, k)
		mu.Unlock()
		<-ctx.Done()
		return 0, grain.Timeout("test.X/" + k + ".Get") // matches context.DeadlineExceeded
	}, grain.MaxInFlight(4))
	sort.Strings(called)
	if want := keys[:4]; !slices.Equal(called, want) || !slices.Equal(res.Unanswered, want) {
		t.Errorf("called %v, unanswered %v; want both %v", called, res.Unanswered, want)
	}
	if want := keys[4:]; !slices.Equal(res.NotStarted, want) {
		t.Errorf("not started = %v, want %v", res.NotStarted, want)
	}
	if len(res.Answered)+len(res.Failed) != 0 {
		t.Errorf("answered %v, failed %v; want none", res.Answered, res.Failed)
	}
	if err := res.Err(); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Err() = %v, want one matching context.DeadlineExceeded", err)
	}
	if p := f.peak.Load(); p != 4 {
		t.Errorf("peak in flight %d, want 4", p)
	}
}

// FanOut returns only after every call it started returned, even one
// that takes its time to notice the context ended; what such a call
// returns decides its set.
func TestFanOutWaitsForCalls(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var running atomic.Int64
	start := time.Now()
	res := grain.FanOut(ctx, []string{"late-ok", "late-err", "late-ctx", "own-deadline"}, func(ctx context.Context, k string) (string, error) {
		running.Add(1)
		defer running.Add(-1)
		if k == "own-deadline" {
			// A deadline of the call's own, before FanOut's: failed.
			cctx, ccancel := context.WithTimeout(ctx, time.Millisecond)
			defer ccancel()
			<-cctx.Done()
			return "", cctx.Err()
		}
		<-ctx.Done()
		time.Sleep(100 * time.Millisecond) // slow to notice
		switch k {
		case "late-ok":
			return "ok", nil
		case "late-err":
			return "", errOdd
		}
		return "", ctx.Err()
	})
	if n := running.Load(); n != 0 {
		t.Fatalf("FanOut returned with %d calls running", n)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("FanOut returned after %v, before its calls could", d)
	}
	if res.Answered["late-ok"] != "ok" || !errors.Is(res.Failed["late-err"], errOdd) ||
		!errors.Is(res.Failed["own-deadline"], context.DeadlineExceeded) || !slices.Equal(res.Unanswered, []string{"late-ctx"}) {
		t.Errorf("result %+v", res)
	}
}

func TestFanOutDuplicatesAndEmpty(t *testing.T) {
	var calls atomic.Int64
	res := grain.FanOut(context.Background(), []int{1, 2, 1, 3, 2}, func(ctx context.Context, k int) (int, error) {
		calls.Add(1)
		return k * 10, nil
	}, grain.MaxInFlight(0)) // means 1
	if calls.Load() != 3 || len(res.Answered) != 3 || res.Answered[3] != 30 || !res.Complete() || res.Err() != nil {
		t.Errorf("%d calls, result %+v, err %v", calls.Load(), res, res.Err())
	}
	empty := grain.FanOut(context.Background(), nil, func(ctx context.Context, k int) (int, error) {
		t.Error("called with no keys")
		return 0, nil
	})
	if !empty.Complete() || empty.Err() != nil || len(empty.Answered) != 0 {
		t.Errorf("empty result %+v", empty)
	}
}

func TestFanOutPanic(t *testing.T) {
	var running atomic.Int64
	defer func() {
		if p := recover(); p != "boom" {
			t.Errorf("recovered %v, want boom", p)
		}
		if n := running.Load(); n != 0 {
			t.Errorf("panic re-raised with %d calls running", n)
		}
	}()
	grain.FanOut(context.Background(), []int{1, 2, 3, 4}, func(ctx context.Context, k int) (int, error) {
		running.Add(1)
		defer running.Add(-1)
		if k == 1 {
			panic("boom")
		}
		<-ctx.Done() // the panic cancels the others
		return 0, ctx.Err()
	}, grain.MaxInFlight(4))
	t.Error("FanOut did not panic")
}

func sortedKeys[V any](m map[int]V) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func ExampleFanOut() {
	// In a real program call makes a grain call, for example
	// NewPlayerRef(c, id).Score(ctx); here it is a function.
	scores := map[string]int{"ann": 3, "bob": 5}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	res := grain.FanOut(ctx, []string{"ann", "bob", "cid"}, func(ctx context.Context, id string) (int, error) {
		s, ok := scores[id]
		if !ok {
			return 0, fmt.Errorf("player %s: %w", id, grain.ErrNotFound)
		}
		return s, nil
	}, grain.MaxInFlight(2))
	fmt.Println("answered:", res.Answered["ann"], res.Answered["bob"])
	fmt.Println("failed:", res.Failed["cid"])
	fmt.Println("complete:", res.Complete(), "not found:", errors.Is(res.Err(), grain.ErrNotFound))
	// Output:
	// answered: 3 5
	// failed: player cid: grain: not found
	// complete: true not found: true
}
