package grain

import (
	"context"
	"errors"
	"sync"
)

// Errors returned by the runtime. All of them are errors.Is-checkable, also
// when they crossed the wire from another process. Each has the outcome
// (see Outcome) that OutcomeOf reports for it unless something marks the
// error otherwise; a grain method's own errors are always OutcomeFailed.
var (
	// ErrOverloaded: the target activation's mailbox, or a silo's queue for
	// calls, is full. The call was not queued; retrying later may succeed.
	// Did not run.
	ErrOverloaded = NewError("overloaded", "grain: overloaded")
	// ErrUnknownGrainType: no silo hosts a grain type of that name. Did not
	// run.
	ErrUnknownGrainType = NewError("unknown_grain_type", "grain: unknown grain type")
	// ErrUnknownMethod: the grain type has no such method. Did not run.
	ErrUnknownMethod = NewError("unknown_method", "grain: unknown method")
	// ErrIncompatible: the grain type has a method of that name, but with
	// other parameter or result types than the caller's (their signature
	// fingerprints differ; see Fingerprint): caller and silo were built
	// from different versions of the grain interface. The message names
	// both signatures. Did not run.
	ErrIncompatible = NewError("incompatible_method", "grain: incompatible method signature")
	// ErrTimeout: the call's deadline passed before a reply arrived. The
	// outcome of the call is unknown. Errors that match ErrTimeout also match
	// context.DeadlineExceeded.
	ErrTimeout = NewError("timeout", "grain: call timed out")
	// ErrNotFound: a looked-up entity (directory entry, reminder, ...) does
	// not exist. As the answer of a method: ran and failed.
	ErrNotFound = NewError("not_found", "grain: not found")
	// ErrSiloUnavailable: the silo that should serve the call is stopping,
	// stopped, fenced or unreachable, and the call was not delivered to a
	// running turn. Did not run. (A connection lost after the call was
	// sent is ErrOutcomeUnknown instead.)
	ErrSiloUnavailable = NewError("silo_unavailable", "grain: silo unavailable")
	// ErrConflict: a storage write carried a stale etag: another activation
	// wrote since this one read. runtime/storage re-exports it. The method
	// ran; its state change was not written and the activation was torn
	// down: ran and failed.
	ErrConflict = NewError("conflict", "grain: storage etag conflict")
	// ErrPanic: the grain method panicked. The activation was torn down
	// without writing its state. Ran and failed.
	ErrPanic = NewError("panic", "grain: grain method panicked")
	// ErrActivationFailed: loading state or OnActivate failed; the next call
	// tries to activate again. The cause is wrapped. Did not run.
	ErrActivationFailed = NewError("activation_failed", "grain: activation failed")
	// ErrTooLarge: a message or a state exceeds a configured size limit.
	// For a request: did not run. A state the provider refuses as too
	// large fails the call that wrote it: ran and failed.
	ErrTooLarge = NewError("too_large", "grain: too large")
	// ErrBadRequest: a request could not be decoded or is malformed, or a
	// Context method was given what the runtime refuses (a reminder period
	// below the minimum, RegisterReminder on a type that does not
	// implement Remindable). Did not run.
	ErrBadRequest = NewError("bad_request", "grain: malformed request")
	// ErrOutcomeUnknown: the call may or may not have run and its writes
	// may or may not be durable: the connection to the silo was lost after
	// the call was sent, the silo was fenced while the call ran, or storage
	// did not say whether a write landed. Outcome unknown.
	ErrOutcomeUnknown = NewError("outcome_unknown", "grain: outcome unknown")
	// ErrUnauthenticated: the silo's gateway requires clients to
	// authenticate and this one did not (no token or certificate, or one
	// its authenticator refused). The gateway refused the connection
	// before reading any call. Did not run.
	ErrUnauthenticated = NewError("unauthenticated", "grain: unauthenticated")
	// ErrPermissionDenied: the caller may not make this call. A gateway
	// answers it to a client that sends what only silos may send (a
	// reminder tick, a reminder-service notice, a forwarded request, a
	// call chain, a request-context key reserved for the runtime); a grain
	// may return it when CallerIdentity is not allowed to call a method.
	// From a gateway: did not run.
	ErrPermissionDenied = NewError("permission_denied", "grain: permission denied")
	// ErrDeadlock: the call would have waited on an activation that waits
	// for the call itself: an activation already in the call's own chain
	// (A calls B, which calls A back), whose type admits no such call (see
	// Reentrant, WithCallChainReentrancy and //granary:interleave). The
	// message names the chain, grains and methods. It fails at once,
	// instead of at the deadline. Did not run.
	ErrDeadlock = NewError("deadlock", "grain: deadlock")
)

// canceledCode is the code context.Canceled travels with.
const canceledCode = "canceled"

// CodedError is a sentinel error with a stable code that identifies it
// across processes. Create them with NewError, once, at package level.
type CodedError struct {
	code string
	msg  string
}

func (e *CodedError) Error() string { return e.msg }

// Code returns the stable code of the error.
func (e *CodedError) Code() string { return e.code }

var (
	codesMu sync.RWMutex
	codes   = map[string]*CodedError{}
)

// NewError defines a sentinel error with a code that is stable across
// processes, so a grain's domain error returned by a remote silo still
// matches errors.Is on the caller:
//
//	var ErrInsufficientFunds = grain.NewError("bank.insufficient_funds", "bank: insufficient funds")
//
// Codes are global; defining the same code twice panics, as it is a
// programming error that would make remote errors ambiguous.
func NewError(code, msg string) *CodedError {
	codesMu.Lock()
	defer codesMu.Unlock()
	if _, dup := codes[code]; dup {
		panic("grain: error code defined twice: " + code)
	}
	e := &CodedError{code: code, msg: msg}
	codes[code] = e
	return e
}

// LookupError returns the sentinel defined with code, if any.
func LookupError(code string) (*CodedError, bool) {
	codesMu.RLock()
	defer codesMu.RUnlock()
	e, ok := codes[code]
	return e, ok
}

// CodeOf returns the code of the first CodedError in err's chain, "" if
// there is none. context.DeadlineExceeded maps to ErrTimeout's code and
// context.Canceled to "canceled".
func CodeOf(err error) string {
	if err == nil {
		return ""
	}
	var ce *CodedError
	if errors.As(err, &ce) {
		return ce.code
	}
	var re *RemoteError
	if errors.As(err, &re) {
		return re.Code
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return ErrTimeout.code
	case errors.Is(err, context.Canceled):
		return canceledCode
	}
	return ""
}

// RemoteError is an error that crossed a process boundary: its code and
// message survive, and if the code names a sentinel defined with NewError
// (or one of this package's), errors.Is matches that sentinel.
type RemoteError struct {
	Code    string
	Message string
	// Outcome is what the call did, as the remote silo saw it; zero when
	// the silo did not say (OutcomeOf then goes by the code).
	Outcome Outcome
}

func (e *RemoteError) Error() string { return e.Message }

func (e *RemoteError) grainOutcome() Outcome { return e.Outcome }

// Is reports whether target is the sentinel this error's code stands for.
func (e *RemoteError) Is(target error) bool {
	if e.Code == "" {
		return false
	}
	switch e.Code {
	case ErrTimeout.code:
		if target == context.DeadlineExceeded {
			return true
		}
	case canceledCode:
		return target == context.Canceled
	}
	ce, ok := target.(*CodedError)
	return ok && ce.code == e.Code
}

// Unwrap returns the local sentinel for the code, if one is defined.
func (e *RemoteError) Unwrap() error {
	if ce, ok := LookupError(e.Code); ok {
		return ce
	}
	return nil
}

// timeoutError is what a call that ran out of time returns: it matches both
// ErrTimeout and context.DeadlineExceeded.
type timeoutError struct{ what string }

func (e timeoutError) Error() string {
	return "grain: call timed out: " + e.what + ": " + context.DeadlineExceeded.Error()
}

func (e timeoutError) Is(target error) bool {
	return target == ErrTimeout || target == context.DeadlineExceeded
}

// Timeout returns an error for a call to what that ran out of time. It
// matches both ErrTimeout and context.DeadlineExceeded.
func Timeout(what string) error { return timeoutError{what: what} }
