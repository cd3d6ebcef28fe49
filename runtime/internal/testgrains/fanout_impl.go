package testgrains

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/granary-rt/granary/grain"
)

type fanner struct{ c grain.Context }

// NewFanner returns a Fanner factory.
func NewFanner() func(grain.Context) Fanner {
	return func(c grain.Context) Fanner { return &fanner{c: c} }
}

func (g *fanner) Gather(ctx context.Context, req GatherRequest) (GatherReport, error) {
	ctx, cancel := context.WithTimeout(ctx, req.Timeout)
	defer cancel()
	return Gather(ctx, g.c, req.Keys, req.MaxInFlight), nil
}

// Gather fans Probe calls out to keys through caller with grain.FanOut, at
// most maxInFlight at once: a key "fail-..." fails with ErrDomain, one
// "block-..." waits until ctx ends, any other pings. It reports what
// FanOut returned, sorted, with the most calls seen in flight at once and
// the calls still running when FanOut returned.
func Gather(ctx context.Context, caller grain.Caller, keys []string, maxInFlight int) GatherReport {
	var now, peak atomic.Int64
	res := grain.FanOut(ctx, keys, func(ctx context.Context, key string) (struct{}, error) {
		n := now.Add(1)
		defer now.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		p := NewProbeRef(caller, key)
		switch {
		case strings.HasPrefix(key, "fail-"):
			return struct{}{}, p.Fail(ctx)
		case strings.HasPrefix(key, "block-"):
			return struct{}{}, p.Wait(ctx, "never opened")
		}
		return struct{}{}, p.Ping(ctx)
	}, grain.MaxInFlight(maxInFlight))
	rep := GatherReport{Unanswered: res.Unanswered, NotStarted: res.NotStarted, FailedCodes: map[string]string{},
		PeakInFlight: int(peak.Load()), RunningAfter: int(now.Load())}
	for k := range res.Answered {
		rep.Answered = append(rep.Answered, k)
	}
	for k, err := range res.Failed {
		rep.Failed = append(rep.Failed, k)
		rep.FailedCodes[k] = grain.CodeOf(err)
	}
	slices.Sort(rep.Answered)
	slices.Sort(rep.Failed)
	slices.Sort(rep.Unanswered)
	slices.Sort(rep.NotStarted)
	return rep
}

func (g *fanner) Big(ctx context.Context, n int) (string, error) { return strings.Repeat("b", n), nil }
