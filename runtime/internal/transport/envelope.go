package transport

import (
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/granary-rt/granary/grain"
)

// Kind says what an envelope carries.
type Kind uint8

const (
	// KindRequest is a call that expects exactly one response.
	KindRequest Kind = 1
	// KindOneWay is a call that gets no response.
	KindOneWay Kind = 2
	// KindResponse answers the request with the same ID on the same stream.
	KindResponse Kind = 3
)

func (k Kind) String() string {
	switch k {
	case KindRequest:
		return "request"
	case KindOneWay:
		return "one-way"
	case KindResponse:
		return "response"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Status is the outcome a response reports.
type Status uint8

const (
	// StatusOK: the call succeeded; Body holds the encoded result.
	StatusOK Status = 0
	// StatusError: the call failed; ErrCode and ErrMessage describe the
	// error.
	StatusError Status = 1
	// StatusNotHere: the receiving silo does not host the target; Redirect
	// names the silo that does, if known.
	StatusNotHere Status = 2
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusError:
		return "error"
	case StatusNotHere:
		return "not-here"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Redirect names the silo a not-here response points to. Both fields are
// empty when the responder does not know the current host.
type Redirect struct {
	SiloID  string
	Address string
}

// Envelope is one message on a stream: a request, a one-way request or a
// response. The transport reads only Kind, ID, Body and the size of the
// other fields; everything else is carried for the runtime as is.
//
// Ownership: Client.Call, Client.Send and Replier.Reply take ownership of the
// envelope they are given; the caller must not modify it afterwards.
// Envelopes the transport hands out (requests to a Handler, responses from
// Call) belong to the receiver; their Body does not alias any buffer.
type Envelope struct {
	// Kind of the envelope. Call and Send set it.
	Kind Kind
	// ID correlates a response with its request on one stream. The client
	// assigns it; responses are matched by it.
	ID uint64

	// Request fields.

	// Target is the grain being called. Type must not be empty.
	Target grain.ID
	// Method is the wire name of the method called (grain.MethodDesc.Name,
	// or grain.ReminderMethod): 1 to MaxMethodName bytes of UTF-8 without
	// control characters.
	Method string
	// Fingerprint is the fingerprint of the caller's signature of the
	// method (grain.MethodDesc.Fingerprint); the receiver dispatches only
	// to a method of the same name and fingerprint.
	Fingerprint uint64
	// Flags are the method's flags (one-way, read-only, ...).
	Flags grain.MethodFlags
	// Timeout is the time the callee has, relative to when it receives the
	// request: hosts do not need to agree on the time of day. Zero means no
	// timeout. Call fills it from the ctx deadline.
	Timeout time.Duration
	// Hops counts how often the request was forwarded.
	Hops uint8
	// Chain is the call chain, for reentrancy; opaque to the transport. At
	// most MaxChainLen entries.
	Chain []string
	// Context is the request context; at most MaxContextLen entries.
	Context map[string]string

	// Body is the encoded arguments of a request or result of a response,
	// at most Limits.MaxBodySize bytes.
	Body []byte

	// Response fields.

	// Status of a response.
	Status Status
	// ErrCode and ErrMessage describe the error of a StatusError response:
	// grain.CodeOf(err) and err.Error().
	ErrCode    string
	ErrMessage string
	// ErrOutcome is grain.OutcomeOf(err) of a StatusError response: what
	// the call did. Zero when the responder did not say.
	ErrOutcome grain.Outcome
	// Redirect is where a StatusNotHere response points.
	Redirect Redirect

	// size is the encoded size, computed when the envelope is queued.
	size int
}

const (
	// MaxChainLen is the largest number of call chain entries an envelope
	// may carry.
	MaxChainLen = 256
	// MaxContextLen is the largest number of request context entries an
	// envelope may carry.
	MaxContextLen = 256
	// MaxMethodName is the longest method name an envelope may carry, in
	// bytes (grain allows at most grain.MaxMethodName; the wire has room
	// for longer ones).
	MaxMethodName = 255
	// maxErrMessage bounds the error message of an error response; longer
	// messages are truncated so the response still fits.
	maxErrMessage = 8 << 10
)

// NewResponse returns a successful response carrying body.
func NewResponse(body []byte) *Envelope {
	return &Envelope{Kind: KindResponse, Status: StatusOK, Body: body}
}

// NewErrorResponse returns a response reporting err: its code is
// grain.CodeOf(err), its outcome grain.OutcomeOf(err) and its message
// err.Error(), truncated to 8 KiB. The caller's Call returns a
// *grain.RemoteError with that code, outcome and message, which
// errors.Is-matches the sentinel defined with that code.
func NewErrorResponse(err error) *Envelope {
	if err == nil {
		err = errors.New("transport: nil error in error response")
	}
	msg := truncate(err.Error(), maxErrMessage)
	return &Envelope{Kind: KindResponse, Status: StatusError, ErrCode: grain.CodeOf(err), ErrMessage: msg,
		ErrOutcome: grain.OutcomeOf(err)}
}

// NewNotHereResponse returns a response saying that the receiving silo does
// not host the target, pointing to the silo that does (empty if unknown).
func NewNotHereResponse(siloID, address string) *Envelope {
	return &Envelope{Kind: KindResponse, Status: StatusNotHere, Redirect: Redirect{SiloID: siloID, Address: address}}
}

// ErrNotHere matches the error of a not-here response (see NotHereError).
var ErrNotHere = errors.New("transport: grain not here")

// NotHereError is the error Call returns for a not-here response. The
// runtime drops its directory cache entry for the target and retries at
// Redirect, if set.
type NotHereError struct {
	Redirect Redirect
}

func (e *NotHereError) Error() string {
	if e.Redirect.Address == "" {
		return ErrNotHere.Error()
	}
	return fmt.Sprintf("%s: try silo %s at %s", ErrNotHere, e.Redirect.SiloID, e.Redirect.Address)
}

// Is reports whether target is ErrNotHere.
func (e *NotHereError) Is(target error) bool { return target == ErrNotHere }

// Err returns the error a response reports: nil for StatusOK, a
// *grain.RemoteError for StatusError, a *NotHereError for StatusNotHere.
func (e *Envelope) Err() error {
	switch e.Status {
	case StatusOK:
		return nil
	case StatusError:
		return &grain.RemoteError{Code: e.ErrCode, Message: e.ErrMessage, Outcome: e.ErrOutcome}
	case StatusNotHere:
		return &NotHereError{Redirect: e.Redirect}
	}
	return fmt.Errorf("transport: response with unknown status %d: %w", e.Status, grain.ErrBadRequest)
}

// truncate cuts s to at most n bytes, at a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
