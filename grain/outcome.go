package grain

import (
	"errors"
	"fmt"
)

// Outcome says what a failed call did, so a caller knows whether retrying
// it can make it run twice. Every error a Caller returns has one; decide
// retries on OutcomeOf, not on codes (a grain may return a runtime error
// of its own outgoing call, and then it did run).
type Outcome uint8

const (
	// OutcomeUnknown: the call may or may not have run, and what it wrote
	// may or may not be durable: a timeout, a cancellation after the call
	// was sent, a connection lost after it was sent, a silo fenced while
	// the call ran, a state write whose result storage did not report.
	// Read before you retry, or make the call idempotent.
	OutcomeUnknown Outcome = iota + 1
	// OutcomeNotRun: the call did not run and changed nothing: overloaded,
	// unknown grain type or method, incompatible method signature,
	// malformed or too-large request, no silo available, activation
	// failed, unauthenticated, refused by a gateway. Safe to retry.
	OutcomeNotRun
	// OutcomeFailed: the method ran and failed: it returned an error (a
	// domain error, or one from its own call to another grain), or it
	// panicked, or its state change could not be saved and was undone.
	// What the method did besides its own state (calls to other grains)
	// happened. Retrying runs it again.
	OutcomeFailed
	// OutcomeOK: no error.
	OutcomeOK
)

func (o Outcome) String() string {
	switch o {
	case OutcomeUnknown:
		return "outcome unknown"
	case OutcomeNotRun:
		return "did not run"
	case OutcomeFailed:
		return "ran and failed"
	case OutcomeOK:
		return "ok"
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// outcomer is an error that states its outcome: a WithOutcome wrapper, or
// a RemoteError whose outcome crossed the wire.
type outcomer interface {
	error
	grainOutcome() Outcome
}

type outcomeError struct {
	err error
	o   Outcome
}

func (e *outcomeError) Error() string         { return e.err.Error() }
func (e *outcomeError) Unwrap() error         { return e.err }
func (e *outcomeError) grainOutcome() Outcome { return e.o }

// WithOutcome returns err marked with outcome o: OutcomeOf returns o for it
// and for errors that wrap it, unless they carry a mark of their own
// further out. Code and message are err's. It is for the runtime, which
// marks every error a grain method returns as OutcomeFailed; a nil err
// stays nil.
func WithOutcome(err error, o Outcome) error {
	if err == nil {
		return nil
	}
	return &outcomeError{err: err, o: o}
}

// OutcomeOf returns what the call that returned err did: OutcomeOK for nil;
// the outermost mark (WithOutcome, or the outcome a remote silo sent);
// otherwise the outcome of err's code (see the Err* sentinels); and
// OutcomeUnknown for an error that says nothing, which is always safe to
// assume.
func OutcomeOf(err error) Outcome {
	if err == nil {
		return OutcomeOK
	}
	var m outcomer
	if errors.As(err, &m) {
		if o := m.grainOutcome(); o != 0 {
			return o
		}
	}
	return codeOutcome(CodeOf(err))
}

// codeOutcome is the outcome an error with code has when nothing marks it.
func codeOutcome(code string) Outcome {
	switch code {
	case ErrOverloaded.code, ErrUnknownGrainType.code, ErrUnknownMethod.code, ErrIncompatible.code, ErrSiloUnavailable.code,
		ErrActivationFailed.code, ErrTooLarge.code, ErrBadRequest.code, ErrUnauthenticated.code, ErrPermissionDenied.code,
		ErrDeadlock.code:
		return OutcomeNotRun
	case ErrPanic.code, ErrConflict.code, ErrNotFound.code:
		return OutcomeFailed
	case "", ErrTimeout.code, canceledCode, ErrOutcomeUnknown.code:
		return OutcomeUnknown
	}
	// A code defined with NewError outside this package: a domain error.
	return OutcomeFailed
}
