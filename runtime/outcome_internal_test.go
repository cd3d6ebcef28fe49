package runtime

import (
	"fmt"
	"testing"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/storage"
)

// A turn whose writes failed is as unknown as its worst failure: a write
// storage refused for certain does not hide one that may have landed.
func TestWriteFailuresKeepTheWorstOutcome(t *testing.T) {
	refused := fmt.Errorf("storage: %w", grain.ErrTooLarge)
	unsure := fmt.Errorf("%w: storage did not confirm the write: reset", grain.ErrOutcomeUnknown)
	for _, tc := range []struct {
		name string
		errs []error
		want grain.Outcome
	}{
		{"refused", []error{refused}, grain.OutcomeFailed},
		{"conflict", []error{grain.ErrConflict}, grain.OutcomeFailed},
		{"unsure", []error{unsure}, grain.OutcomeUnknown},
		{"refused then unsure", []error{refused, unsure}, grain.OutcomeUnknown},
		{"unsure then refused", []error{unsure, refused}, grain.OutcomeUnknown},
		{"deadline", []error{fmt.Errorf("write: %w", grain.Timeout("x"))}, grain.OutcomeUnknown},
	} {
		st := &stateStore{a: &activation{}, key: storage.Key{State: "s"}}
		for _, err := range tc.errs {
			st.noteFailure(err)
		}
		if got := writeOutcome(st.a.writeFailed); got != tc.want {
			t.Errorf("%s: outcome %v, want %v", tc.name, got, tc.want)
		}
	}
}
