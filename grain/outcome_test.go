package grain_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/granary-rt/granary/grain"
)

var errDomain = grain.NewError("test.outcome_domain", "test: domain")

func TestOutcomeOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want grain.Outcome
	}{
		{"nil", nil, grain.OutcomeOK},
		{"overloaded", fmt.Errorf("x: %w", grain.ErrOverloaded), grain.OutcomeNotRun},
		{"unknown type", grain.ErrUnknownGrainType, grain.OutcomeNotRun},
		{"unknown method", grain.ErrUnknownMethod, grain.OutcomeNotRun},
		{"silo unavailable", grain.ErrSiloUnavailable, grain.OutcomeNotRun},
		{"activation failed", grain.ErrActivationFailed, grain.OutcomeNotRun},
		{"bad request", grain.ErrBadRequest, grain.OutcomeNotRun},
		{"too large request", grain.ErrTooLarge, grain.OutcomeNotRun},
		{"timeout", grain.Timeout("x"), grain.OutcomeUnknown},
		{"deadline", context.DeadlineExceeded, grain.OutcomeUnknown},
		{"canceled", context.Canceled, grain.OutcomeUnknown},
		{"outcome unknown", grain.ErrOutcomeUnknown, grain.OutcomeUnknown},
		{"uncoded", errors.New("etcd: connection reset"), grain.OutcomeUnknown},
		{"panic", grain.ErrPanic, grain.OutcomeFailed},
		{"conflict", grain.ErrConflict, grain.OutcomeFailed},
		{"domain", errDomain, grain.OutcomeFailed},
		// A method that returns its own call's ErrOverloaded did run: the
		// runtime marks what a method returns.
		{"marked", grain.WithOutcome(fmt.Errorf("b: %w", grain.ErrOverloaded), grain.OutcomeFailed), grain.OutcomeFailed},
		{"outermost mark wins", grain.WithOutcome(grain.WithOutcome(grain.ErrOverloaded, grain.OutcomeFailed), grain.OutcomeUnknown), grain.OutcomeUnknown},
		{"wrapped mark", fmt.Errorf("y: %w", grain.WithOutcome(grain.ErrSiloUnavailable, grain.OutcomeFailed)), grain.OutcomeFailed},
		{"remote with outcome", &grain.RemoteError{Code: "silo_unavailable", Outcome: grain.OutcomeUnknown}, grain.OutcomeUnknown},
		{"remote without outcome", &grain.RemoteError{Code: "silo_unavailable"}, grain.OutcomeNotRun},
		{"remote domain", &grain.RemoteError{Code: "some.domain"}, grain.OutcomeFailed},
		{"remote uncoded", &grain.RemoteError{Message: "x"}, grain.OutcomeUnknown},
	} {
		if got := grain.OutcomeOf(tc.err); got != tc.want {
			t.Errorf("%s: OutcomeOf(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
	if grain.WithOutcome(nil, grain.OutcomeFailed) != nil {
		t.Error("WithOutcome(nil) is not nil")
	}
	marked := grain.WithOutcome(grain.ErrOverloaded, grain.OutcomeFailed)
	if !errors.Is(marked, grain.ErrOverloaded) || grain.CodeOf(marked) != "overloaded" || marked.Error() != grain.ErrOverloaded.Error() {
		t.Errorf("a mark changed the error: %v, code %q", marked, grain.CodeOf(marked))
	}
}
