package testgrains

import (
	"context"
	"time"
)

// Fanner is a grain that fans calls out to Probe grains from its turn
// with grain.FanOut (and returns large replies).
//
//granary:grain name=test.Fanner
type Fanner interface {
	// Gather calls one Probe per key, at most req.MaxInFlight at a time,
	// within req.Timeout: a key "fail-..." calls Probe.Fail, "block-..."
	// Probe.Wait on a barrier that never opens, any other Probe.Ping.
	Gather(ctx context.Context, req GatherRequest) (GatherReport, error)
	// Big returns a string of n bytes: a large reply of a copy-free
	// method.
	Big(ctx context.Context, n int) (string, error)
}

// GatherRequest is Fanner.Gather's argument.
type GatherRequest struct {
	Keys        []string
	MaxInFlight int
	Timeout     time.Duration
}

// GatherReport is what Fanner.Gather saw: the keys of each set of the
// fan-out's result, sorted, the code of each failure, the most calls it
// had in flight, and the calls still running when FanOut returned.
type GatherReport struct {
	Answered, Failed, Unanswered, NotStarted []string
	FailedCodes                              map[string]string
	PeakInFlight, RunningAfter               int
}
