package transport

import (
	"encoding/binary"
	"fmt"
	"math"
	"unicode"
	"unicode/utf8"

	"github.com/granary-rt/granary/grain"
)

// The wire format: a frame is the msgpack array
//
//	[version, [envelope, ...]]
//
// and an envelope is a msgpack array whose layout depends on its kind
// (field 0); field 1 is always the request id:
//
//	request, one-way: [kind, id, type, key, method, fingerprint, flags, timeout_ns, hops, chain, context, body]
//	response:         [kind, id, status, body, err_code, err_message, redirect_silo, redirect_addr, err_outcome]
//
// method is the method's wire name (a str), fingerprint the uint64
// fingerprint of the caller's signature of it. Frame version 1 carried a
// method index (an int) instead of both; a version-1 frame is refused as a
// whole, with an error that says so, and a request whose method is not a
// str is rejected as malformed: no request is read as another method.
//
// err_outcome (a grain.Outcome; 0 = not said) was appended later: a response
// of 8 fields is still read, with no outcome.
//
// A frame from a client may carry a third field, the ids of the requests
// its callers gave up on (their context was cancelled):
//
//	[version, [envelope, ...], [cancelled_id, ...]]
//
// The server cancels the context of those requests that are still in
// flight on the stream and ignores the other ids. A receiver from before
// cancellation skips the field, as it skips every trailing field of a
// frame: nothing breaks, its handlers just run on. The field is absent
// from frames without cancellations.
//
// chain is nil or an array of str, context nil or a map of str to str, body
// nil or bin. A decoder accepts any msgpack encoding of a value of the right
// family (a small uint in its uint64 form, a body as str, ...) and
// skips trailing fields it does not know, so fields can be appended later.

const (
	frameVersion = 2
	// frameOverhead bounds the bytes of a frame that are not envelopes.
	frameOverhead = 16
	reqFields     = 12
	respFields    = 9
	// minRespFields is the length of a response before err_outcome.
	minRespFields = 8
	// maxIntern bounds the grain type names a decoder interns.
	maxIntern = 1024
)

func appendUint(b []byte, v uint64) []byte {
	switch {
	case v <= 0x7f:
		return append(b, byte(v))
	case v <= math.MaxUint8:
		return append(b, 0xcc, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xcf), v)
}

func uintSize(v uint64) int {
	switch {
	case v <= 0x7f:
		return 1
	case v <= math.MaxUint8:
		return 2
	case v <= math.MaxUint16:
		return 3
	case v <= math.MaxUint32:
		return 5
	}
	return 9
}

// appendInt encodes non-negative values as uints, negative ones in the
// smallest signed form.
func appendInt(b []byte, v int64) []byte {
	switch {
	case v >= 0:
		return appendUint(b, uint64(v))
	case v >= -32:
		return append(b, byte(v))
	case v >= math.MinInt8:
		return append(b, 0xd0, byte(v))
	case v >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(v))
	case v >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(v))
}

func intSize(v int64) int {
	switch {
	case v >= 0:
		return uintSize(uint64(v))
	case v >= -32:
		return 1
	case v >= math.MinInt8:
		return 2
	case v >= math.MinInt16:
		return 3
	case v >= math.MinInt32:
		return 5
	}
	return 9
}

func appendStr(b []byte, s string) []byte {
	n := len(s)
	switch {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n <= math.MaxUint8:
		b = append(b, 0xd9, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xda), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(n))
	}
	return append(b, s...)
}

func strSize(n int) int {
	switch {
	case n < 32:
		return 1 + n
	case n <= math.MaxUint8:
		return 2 + n
	case n <= math.MaxUint16:
		return 3 + n
	}
	return 5 + n
}

// appendBin encodes an empty body as nil.
func appendBin(b []byte, p []byte) []byte {
	n := len(p)
	switch {
	case n == 0:
		return append(b, 0xc0)
	case n <= math.MaxUint8:
		b = append(b, 0xc4, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xc5), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xc6), uint32(n))
	}
	return append(b, p...)
}

func binSize(n int) int {
	switch {
	case n == 0:
		return 1
	case n <= math.MaxUint8:
		return 2 + n
	case n <= math.MaxUint16:
		return 3 + n
	}
	return 5 + n
}

// appendHeader appends an array (base 0x90, 0xdc) or map (base 0x80, 0xde)
// header.
func appendHeader(b []byte, n int, fix, code16 byte) []byte {
	switch {
	case n < 16:
		return append(b, fix|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, code16), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(b, code16+1), uint32(n))
}

func headerSize(n int) int {
	switch {
	case n < 16:
		return 1
	case n <= math.MaxUint16:
		return 3
	}
	return 5
}

func appendArrayHeader(b []byte, n int) []byte { return appendHeader(b, n, 0x90, 0xdc) }
func appendMapHeader(b []byte, n int) []byte   { return appendHeader(b, n, 0x80, 0xde) }

// headerBytes returns the encoded size of everything in e except its body.
func (e *Envelope) headerBytes() int {
	n := 1 + uintSize(uint64(e.Kind)) + uintSize(e.ID) + binSize(0)
	if e.Kind == KindResponse {
		return n + uintSize(uint64(e.Status)) + strSize(len(e.ErrCode)) + strSize(len(e.ErrMessage)) +
			strSize(len(e.Redirect.SiloID)) + strSize(len(e.Redirect.Address)) + uintSize(uint64(e.ErrOutcome))
	}
	n += strSize(len(e.Target.Type)) + strSize(len(e.Target.Key)) + strSize(len(e.Method)) + uintSize(e.Fingerprint) +
		uintSize(uint64(e.Flags)) + intSize(int64(e.Timeout)) + uintSize(uint64(e.Hops))
	if len(e.Chain) == 0 {
		n++
	} else {
		n += headerSize(len(e.Chain))
		for _, s := range e.Chain {
			n += strSize(len(s))
		}
	}
	if len(e.Context) == 0 {
		n++
	} else {
		n += headerSize(len(e.Context))
		for k, v := range e.Context {
			n += strSize(len(k)) + strSize(len(v))
		}
	}
	return n
}

// encodedSize returns the size appendEnvelope produces for e.
func (e *Envelope) encodedSize() int { return e.headerBytes() - binSize(0) + binSize(len(e.Body)) }

// appendEnvelope appends the encoding of e. Kind must be valid.
func appendEnvelope(b []byte, e *Envelope) []byte {
	if e.Kind == KindResponse {
		b = append(b, 0x90|respFields)
		b = appendUint(b, uint64(e.Kind))
		b = appendUint(b, e.ID)
		b = appendUint(b, uint64(e.Status))
		b = appendBin(b, e.Body)
		b = appendStr(b, e.ErrCode)
		b = appendStr(b, e.ErrMessage)
		b = appendStr(b, e.Redirect.SiloID)
		b = appendStr(b, e.Redirect.Address)
		return appendUint(b, uint64(e.ErrOutcome))
	}
	b = append(b, 0x90|reqFields)
	b = appendUint(b, uint64(e.Kind))
	b = appendUint(b, e.ID)
	b = appendStr(b, e.Target.Type)
	b = appendStr(b, e.Target.Key)
	b = appendStr(b, e.Method)
	b = appendUint(b, e.Fingerprint)
	b = appendUint(b, uint64(e.Flags))
	b = appendInt(b, int64(e.Timeout))
	b = appendUint(b, uint64(e.Hops))
	if len(e.Chain) == 0 {
		b = append(b, 0xc0)
	} else {
		b = appendArrayHeader(b, len(e.Chain))
		for _, s := range e.Chain {
			b = appendStr(b, s)
		}
	}
	if len(e.Context) == 0 {
		b = append(b, 0xc0)
	} else {
		b = appendMapHeader(b, len(e.Context))
		for k, v := range e.Context {
			b = appendStr(appendStr(b, k), v)
		}
	}
	return appendBin(b, e.Body)
}

// kindCancel marks a cancellation queued on a client's stream: it asks the
// server to cancel the context of request ID. It is never an envelope on
// the wire: the writer sends the ids of the cancellations of a frame in the
// frame's third field.
const kindCancel Kind = 0xff

// newCancel returns the cancellation of request id, ready to be queued.
func newCancel(id uint64) *Envelope {
	return &Envelope{Kind: kindCancel, ID: id, size: uintSize(id)}
}

// frameHeaderSize returns the size of a frame of n envelopes and no
// cancellations, less the envelopes.
func frameHeaderSize(n int) int { return 2 + headerSize(n) }

// frameSize returns the size appendFrame produces for envs, whose sizes
// add up to total, and how many of envs are cancellations.
func frameSize(envs []*Envelope, total int) (size, cancels int) {
	c := 0
	for _, e := range envs {
		if e.Kind == kindCancel {
			c++
		}
	}
	if c == 0 {
		return frameHeaderSize(len(envs)) + total, 0
	}
	return 2 + headerSize(len(envs)-c) + headerSize(c) + total, c
}

// appendFrame appends a frame holding envs, whose sizes must be set:
// the envelopes in order, and the ids of the cancellations among them in
// the frame's third field.
func appendFrame(b []byte, envs []*Envelope) []byte {
	c := 0
	for _, e := range envs {
		if e.Kind == kindCancel {
			c++
		}
	}
	if c == 0 {
		b = appendArrayHeader(append(b, 0x92, frameVersion), len(envs))
		for _, e := range envs {
			b = appendEnvelope(b, e)
		}
		return b
	}
	b = appendArrayHeader(append(b, 0x93, frameVersion), len(envs)-c)
	for _, e := range envs {
		if e.Kind != kindCancel {
			b = appendEnvelope(b, e)
		}
	}
	b = appendArrayHeader(b, c)
	for _, e := range envs {
		if e.Kind == kindCancel {
			b = appendUint(b, e.ID)
		}
	}
	return b
}

// checkEnvelope validates an envelope before it is queued and records its
// encoded size. Limit violations wrap grain.ErrTooLarge, malformed fields
// grain.ErrBadRequest.
func checkEnvelope(e *Envelope, lim *Limits) error {
	switch e.Kind {
	case KindRequest, KindOneWay:
		switch {
		case e.Target.Type == "":
			return fmt.Errorf("empty target type: %w", grain.ErrBadRequest)
		case badMethodName(e.Method) != "":
			return fmt.Errorf("method name %q: %s: %w", truncate(e.Method, MaxMethodName), badMethodName(e.Method), grain.ErrBadRequest)
		case e.Timeout < 0:
			return fmt.Errorf("negative timeout %v: %w", e.Timeout, grain.ErrBadRequest)
		case len(e.Chain) > MaxChainLen:
			return fmt.Errorf("call chain has %d entries, limit %d: %w", len(e.Chain), MaxChainLen, grain.ErrTooLarge)
		case len(e.Context) > MaxContextLen:
			return fmt.Errorf("request context has %d entries, limit %d: %w", len(e.Context), MaxContextLen, grain.ErrTooLarge)
		}
	case KindResponse:
		if e.Status > StatusNotHere {
			return fmt.Errorf("unknown status %d: %w", e.Status, grain.ErrBadRequest)
		}
	default:
		return fmt.Errorf("unknown kind %d: %w", e.Kind, grain.ErrBadRequest)
	}
	if len(e.Body) > lim.MaxBodySize {
		return fmt.Errorf("body is %d bytes, limit %d: %w", len(e.Body), lim.MaxBodySize, grain.ErrTooLarge)
	}
	h := e.headerBytes()
	if h > lim.MaxHeaderSize {
		return fmt.Errorf("envelope header is %d bytes, limit %d: %w", h, lim.MaxHeaderSize, grain.ErrTooLarge)
	}
	e.size = h - binSize(0) + binSize(len(e.Body))
	return nil
}

// badMethodName says what is wrong with a method name from the wire, or ""
// if nothing is: it is empty, too long, not UTF-8 or has control
// characters (which would garble the logs and errors that quote it).
func badMethodName(s string) string {
	switch {
	case len(s) == 0:
		return "empty"
	case len(s) > MaxMethodName:
		return fmt.Sprintf("%d bytes, limit %d", len(s), MaxMethodName)
	}
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n <= 1 {
			return "not valid UTF-8"
		}
		if unicode.IsControl(r) {
			return "has a control character"
		}
		i += n
	}
	return ""
}

// setID sets the id of a checked envelope and keeps its size current.
func (e *Envelope) setID(id uint64) {
	e.size += uintSize(id) - uintSize(e.ID)
	e.ID = id
}
