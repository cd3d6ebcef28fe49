package runtime

import (
	"fmt"
	"testing"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/internal/transport"
)

// A grain's error that merely wraps a routing answer (from its own call to
// another grain) must not make its caller route, and so run, the call again.
func TestRerouteOnlyOnTheRoutingLayersOwnAnswers(t *testing.T) {
	nh := &notHereError{id: grain.ID{Type: "t", Key: "k"}, why: "test"}
	notSent := fmt.Errorf("transport: dial x: %w: %w", grain.ErrSiloUnavailable, transport.ErrNotSent)
	for _, tc := range []struct {
		name   string
		err    error
		remote bool
		want   bool
	}{
		{"not-here answer", nh, false, true},
		{"remote not-here answer", &transport.NotHereError{}, true, true},
		{"dial failure of our own send", notSent, true, true},
		{"grain returned a wrapped not-here", fmt.Errorf("grain: %w", nh), false, false},
		{"grain returned a wrapped dial failure", notSent, false, false},
		{"grain returned a wrapped dial failure, remotely", fmt.Errorf("remote grain: %w", &grain.RemoteError{Code: "x"}), true, false},
		{"success", nil, true, false},
	} {
		if _, got := reroute(tc.err, tc.remote); got != tc.want {
			t.Errorf("%s: reroute = %v, want %v", tc.name, got, tc.want)
		}
	}
}
