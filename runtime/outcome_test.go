package runtime_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/runtimetest"
)

// checkOutcome fails the test unless err matches want (if not nil) and has
// outcome o.
func checkOutcome(t *testing.T, what string, err, want error, o grain.Outcome) {
	t.Helper()
	if want != nil && !errors.Is(err, want) {
		t.Errorf("%s: %v, want %v", what, err, want)
	}
	if got := grain.OutcomeOf(err); got != o {
		t.Errorf("%s: outcome of %v is %q, want %q", what, err, got, o)
	}
}

// checkMethodOutcomes calls methods of a Probe through c whose errors
// have each outcome. A method that returns a runtime error of its own (as
// it would from a call to another grain) did run: the outcome says so,
// while errors.Is still finds the sentinel.
func checkMethodOutcomes(t *testing.T, ctx context.Context, c grain.Caller) {
	t.Helper()
	p := testgrains.NewProbeRef(c, "outcomes")
	checkOutcome(t, "domain error", p.Fail(ctx), testgrains.ErrDomain, grain.OutcomeFailed)
	for _, e := range []*grain.CodedError{grain.ErrOverloaded, grain.ErrSiloUnavailable, grain.ErrUnknownMethod, grain.ErrTimeout} {
		checkOutcome(t, "method returned "+e.Code(), p.Return(ctx, e.Code()), e, grain.OutcomeFailed)
	}
	checkOutcome(t, "panic", testgrains.NewProbeRef(c, "outcomes-panic").Panic(ctx), grain.ErrPanic, grain.OutcomeFailed)
	checkOutcome(t, "success", p.Ping(ctx), nil, grain.OutcomeOK)
	nope := &grain.MethodDesc{Name: "Nope", NewArgs: func() any { return new(struct{}) }}
	other := &grain.TypeDesc{Name: testgrains.ProbeType.Name, Methods: []grain.MethodDesc{*nope}}
	_, err := c.Invoke(ctx, &grain.Call{Target: p.ID(), Type: other, Method: nope, Args: &struct{}{}})
	checkOutcome(t, "unknown method", err, grain.ErrUnknownMethod, grain.OutcomeNotRun)
	unknown := &grain.TypeDesc{Name: "no.Such", Methods: []grain.MethodDesc{{Name: "X", NewArgs: func() any { return new(struct{}) }}}}
	_, err = c.Invoke(ctx, &grain.Call{Target: grain.ID{Type: "no.Such", Key: "k"}, Type: unknown, Method: &unknown.Methods[0], Args: &struct{}{}})
	checkOutcome(t, "unknown type", err, grain.ErrUnknownGrainType, grain.OutcomeNotRun)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	checkOutcome(t, "timeout", p.Wait(short, "never"), grain.ErrTimeout, grain.OutcomeUnknown)
}

func TestOutcomesInProcess(t *testing.T) {
	f := start(t, 1, runtime.Config{})
	checkMethodOutcomes(t, ctxT(t), f.Client())
}

// TestFencedDuringCallIsOutcomeUnknown: a turn that was running when its
// silo fenced itself may have done what it was asked (written state,
// called other grains): its caller must not be told it did not run.
func TestFencedDuringCallIsOutcomeUnknown(t *testing.T) {
	f := start(t, 1, runtime.Config{LeaseTTL: 2 * time.Second})
	ctx := ctxT(t)
	s := f.Silos[0]
	p := testgrains.NewProbeRef(f.Client(), "fenced-mid-call")
	done := make(chan error, 1)
	go func() { done <- p.Wait(ctx, "fenced-mid-call") }()
	runtimetest.Eventually(t, 10*time.Second, func() bool { return f.obs.Waiting.Load() == 1 }, "the call never started")
	revokeLease(t, ctx, f.Cluster, s)
	// The fence drops the silo's activations from its table.
	runtimetest.Eventually(t, 10*time.Second, func() bool { return s.ActivationCount() == 0 }, "the silo did not fence itself")
	f.obs.Open("fenced-mid-call")
	err := <-done
	checkOutcome(t, "call running at the fence", err, grain.ErrOutcomeUnknown, grain.OutcomeUnknown)
	if errors.Is(err, grain.ErrSiloUnavailable) {
		t.Errorf("%v matches ErrSiloUnavailable, which means it did not run", err)
	}
}
