package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/granary-rt/granary/grain"
	msgcodec "github.com/granary-rt/granary/grain/codec"
)

// Frame-level decoding errors: the frame cannot be parsed, so nothing in it
// can be trusted or answered.
var (
	errTruncated = errors.New("truncated value")
	errNotFrame  = errors.New("not a frame: want the array [version, [envelope, ...]]")
)

// fieldError is an envelope-level decoding error: the value was consumed, the
// frame is still parseable, only this envelope is rejected. It wraps
// grain.ErrBadRequest or grain.ErrTooLarge.
type fieldError struct{ err error }

func (e fieldError) Error() string { return e.err.Error() }
func (e fieldError) Unwrap() error { return e.err }

func badField(format string, args ...any) error {
	return fieldError{fmt.Errorf("transport: malformed envelope: "+format+": %w", append(args, grain.ErrBadRequest)...)}
}

func tooLarge(format string, args ...any) error {
	return fieldError{fmt.Errorf("transport: envelope too large: "+format+": %w", append(args, grain.ErrTooLarge)...)}
}

func isFieldError(err error) bool {
	_, ok := err.(fieldError)
	return ok
}

// reader reads msgpack values from a byte slice. Every method either
// consumes exactly one value, or returns a frame-level error. A method that
// finds a value of the wrong family skips it and returns a fieldError.
type reader struct {
	b   []byte
	off int
}

func (r *reader) peek() (byte, error) {
	if r.off >= len(r.b) {
		return 0, errTruncated
	}
	return r.b[r.off], nil
}

// take returns the next n bytes.
func (r *reader) take(n int) ([]byte, error) {
	if n < 0 || n > len(r.b)-r.off {
		return nil, errTruncated
	}
	p := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return p, nil
}

func (r *reader) be(n int) (uint64, error) {
	p, err := r.take(n)
	if err != nil {
		return 0, err
	}
	switch n {
	case 1:
		return uint64(p[0]), nil
	case 2:
		return uint64(binary.BigEndian.Uint16(p)), nil
	case 4:
		return uint64(binary.BigEndian.Uint32(p)), nil
	}
	return binary.BigEndian.Uint64(p), nil
}

// wrongType skips the value at the read position and returns a fieldError
// naming what was expected.
func (r *reader) wrongType(want string) error {
	c := r.b[r.off]
	if err := r.skip(); err != nil {
		return err
	}
	return badField("want %s, got type byte 0x%02x", want, c)
}

// uint reads a non-negative integer in any integer encoding.
func (r *reader) uint() (uint64, error) {
	c, err := r.peek()
	if err != nil {
		return 0, err
	}
	switch {
	case c <= 0x7f:
		r.off++
		return uint64(c), nil
	case c >= 0xcc && c <= 0xcf:
		r.off++
		return r.be(1 << (c - 0xcc))
	case c >= 0xd0 && c <= 0xd3, c >= 0xe0:
		v, err := r.int()
		if err != nil {
			return 0, err
		}
		if v < 0 {
			return 0, badField("want unsigned integer, got %d", v)
		}
		return uint64(v), nil
	}
	return 0, r.wrongType("integer")
}

// int reads a signed integer in any integer encoding.
func (r *reader) int() (int64, error) {
	c, err := r.peek()
	if err != nil {
		return 0, err
	}
	switch {
	case c <= 0x7f:
		r.off++
		return int64(c), nil
	case c >= 0xe0:
		r.off++
		return int64(int8(c)), nil
	case c >= 0xcc && c <= 0xcf:
		r.off++
		v, err := r.be(1 << (c - 0xcc))
		if err != nil {
			return 0, err
		}
		if v > math.MaxInt64 {
			return 0, badField("integer %d overflows int64", v)
		}
		return int64(v), nil
	case c >= 0xd0 && c <= 0xd3:
		r.off++
		n := 1 << (c - 0xd0)
		v, err := r.be(n)
		if err != nil {
			return 0, err
		}
		switch n {
		case 1:
			return int64(int8(v)), nil
		case 2:
			return int64(int16(v)), nil
		case 4:
			return int64(int32(v)), nil
		}
		return int64(v), nil
	}
	return 0, r.wrongType("integer")
}

// bytesOf reads a str (or, with bin, a bin) value and returns a view of its
// bytes. nil reads as empty.
func (r *reader) bytesOf(bin bool) ([]byte, error) {
	c, err := r.peek()
	if err != nil {
		return nil, err
	}
	var n uint64
	switch {
	case c == 0xc0:
		r.off++
		return nil, nil
	case c >= 0xa0 && c <= 0xbf:
		r.off++
		n = uint64(c & 0x1f)
	case c >= 0xd9 && c <= 0xdb:
		r.off++
		if n, err = r.be(1 << (c - 0xd9)); err != nil {
			return nil, err
		}
	case bin && c >= 0xc4 && c <= 0xc6:
		r.off++
		if n, err = r.be(1 << (c - 0xc4)); err != nil {
			return nil, err
		}
	default:
		if bin {
			return nil, r.wrongType("bin")
		}
		return nil, r.wrongType("str")
	}
	if n > uint64(len(r.b)-r.off) {
		return nil, errTruncated
	}
	return r.take(int(n))
}

func (r *reader) str() ([]byte, error) { return r.bytesOf(false) }
func (r *reader) bin() ([]byte, error) { return r.bytesOf(true) }

// length reads an array (isMap false) or map header; nil reads as 0. The
// length is checked against the bytes left, as every element takes at least
// one byte.
func (r *reader) length(isMap bool) (int, error) {
	c, err := r.peek()
	if err != nil {
		return 0, err
	}
	fix, code16, what, per := byte(0x90), byte(0xdc), "array", uint64(1)
	if isMap {
		fix, code16, what, per = 0x80, 0xde, "map", 2
	}
	var n uint64
	switch {
	case c == 0xc0:
		r.off++
		return 0, nil
	case c&0xf0 == fix:
		r.off++
		n = uint64(c & 0x0f)
	case c == code16 || c == code16+1:
		r.off++
		if n, err = r.be(2 << (c - code16)); err != nil {
			return 0, err
		}
	default:
		return 0, r.wrongType(what)
	}
	if n*per > uint64(len(r.b)-r.off) {
		return 0, errTruncated
	}
	return int(n), nil
}

// skip consumes one value of any type, checked by grain/codec's walker
// (declared lengths against the bytes left, nesting depth, 0xc1).
func (r *reader) skip() error {
	n, err := msgcodec.ValueLen(r.b[r.off:])
	if err != nil {
		return err
	}
	r.off += n
	return nil
}

func (r *reader) skipN(n int) error {
	for range n {
		if err := r.skip(); err != nil {
			return err
		}
	}
	return nil
}

// badEnvelope is an envelope that could be parsed but not accepted. ID and
// Kind are set when known: a request with a known id is answered with Err.
type badEnvelope struct {
	id    uint64
	kind  Kind
	known bool // id and kind were decoded
	err   error
}

// frameDecoder decodes frames. It keeps the decoded envelopes, the rejected
// ones and tables of interned grain type and method names between calls; it is owned
// by one stream's reader goroutine.
type frameDecoder struct {
	lim  Limits
	envs []*Envelope
	bad  []badEnvelope
	// cancels are the ids of the requests the frame cancels.
	cancels []uint64
	intern  map[string]string
	// methods interns method names, once checked.
	methods map[string]string
}

func newFrameDecoder(lim Limits) *frameDecoder {
	return &frameDecoder{lim: lim, intern: make(map[string]string), methods: make(map[string]string)}
}

// decode decodes frame b into d.envs and d.bad. It returns an error if the
// frame as a whole cannot be parsed; it never panics. The decoded envelopes
// do not alias b.
func (d *frameDecoder) decode(b []byte) error {
	clear(d.envs)
	clear(d.bad)
	d.envs, d.bad, d.cancels = d.envs[:0], d.bad[:0], d.cancels[:0]
	r := &reader{b: b}
	n, err := r.length(false)
	switch {
	case err != nil && !isFieldError(err):
		return err
	case err != nil || n < 2:
		return errNotFrame
	}
	v, err := r.uint()
	switch {
	case err != nil && !isFieldError(err):
		return err
	case err != nil:
		return errNotFrame
	case v != frameVersion:
		return fmt.Errorf("frame version %d, want %d: the peer runs a Granary release whose wire format this one does not speak (version 1 addressed methods by index)", v, frameVersion)
	}
	m, err := r.length(false)
	switch {
	case err != nil && !isFieldError(err):
		return err
	case err != nil:
		return errNotFrame
	case m > d.lim.MaxEnvelopesPerFrame:
		return fmt.Errorf("frame has %d envelopes, limit %d", m, d.lim.MaxEnvelopesPerFrame)
	}
	for range m {
		if err := d.envelope(r); err != nil {
			return err
		}
	}
	skip := n - 2
	if n >= 3 {
		if err := d.cancellations(r); err != nil {
			return err
		}
		skip--
	}
	if err := r.skipN(skip); err != nil {
		return err
	}
	if r.off != len(b) {
		return fmt.Errorf("%d trailing bytes after frame", len(b)-r.off)
	}
	return nil
}

// cancellations decodes the third field of a frame, nil or the ids of the
// requests it cancels, into d.cancels: at most MaxEnvelopesPerFrame ids.
// Anything else is a malformed frame.
func (d *frameDecoder) cancellations(r *reader) error {
	m, err := r.length(false)
	switch {
	case err != nil && !isFieldError(err):
		return err
	case err != nil:
		return fmt.Errorf("cancellations: %w", err)
	case m > d.lim.MaxEnvelopesPerFrame:
		return fmt.Errorf("frame has %d cancellations, limit %d", m, d.lim.MaxEnvelopesPerFrame)
	}
	for range m {
		id, err := r.uint()
		if err != nil {
			return fmt.Errorf("cancellations: %w", err)
		}
		d.cancels = append(d.cancels, id)
	}
	return nil
}

// envelope decodes one envelope into d.envs or d.bad. It returns only
// frame-level errors.
func (d *frameDecoder) envelope(r *reader) error {
	start := r.off
	n, err := r.length(false)
	if err != nil {
		if isFieldError(err) {
			d.bad = append(d.bad, badEnvelope{err: err})
			return nil
		}
		return err
	}
	bad := func(id uint64, k Kind, known bool, err error, consumed int) error {
		if !isFieldError(err) {
			return err
		}
		d.bad = append(d.bad, badEnvelope{id: id, kind: k, known: known, err: err})
		return r.skipN(n - consumed)
	}
	if n < 2 {
		return bad(0, 0, false, badField("envelope has %d fields", n), 0)
	}
	kind, err := r.uint()
	if err != nil {
		return bad(0, 0, false, err, 1)
	}
	id, err := r.uint()
	if err != nil {
		return bad(0, 0, false, err, 2)
	}
	k := Kind(kind)
	if kind > math.MaxUint8 {
		k = 0
	}
	e := &Envelope{Kind: k, ID: id}
	var used int
	switch k {
	case KindRequest, KindOneWay:
		if n < reqFields {
			return bad(id, k, true, badField("%s has %d fields, want %d", k, n, reqFields), 2)
		}
		used, err = d.request(r, e)
	case KindResponse:
		if n < minRespFields {
			return bad(id, k, true, badField("%s has %d fields, want %d", k, n, respFields), 2)
		}
		used, err = d.response(r, e, n)
	default:
		return bad(id, k, true, badField("unknown kind %d", kind), 2)
	}
	if err != nil {
		return bad(id, k, true, err, used)
	}
	if err := r.skipN(n - used); err != nil {
		return err
	}
	if h := r.off - start - binSize(len(e.Body)) + binSize(0); h > d.lim.MaxHeaderSize {
		d.bad = append(d.bad, badEnvelope{id: id, kind: k, known: true,
			err: tooLarge("header is %d bytes, limit %d", h, d.lim.MaxHeaderSize)})
		return nil
	}
	d.envs = append(d.envs, e)
	return nil
}

// request decodes fields 2.. of a request. It returns the number of fields
// consumed and the first error.
func (d *frameDecoder) request(r *reader, e *Envelope) (int, error) {
	typ, err := r.str()
	if err != nil {
		return 3, err
	}
	if len(typ) == 0 {
		return 3, badField("missing target type")
	}
	if s, ok := d.intern[string(typ)]; ok {
		e.Target.Type = s
	} else {
		e.Target.Type = string(typ)
		if len(d.intern) < maxIntern {
			d.intern[e.Target.Type] = e.Target.Type
		}
	}
	key, err := r.str()
	if err != nil {
		return 4, err
	}
	e.Target.Key = string(key)
	method, err := r.str()
	if err != nil {
		return 5, err
	}
	if s, ok := d.methods[string(method)]; ok {
		e.Method = s // interned method names were checked
	} else {
		e.Method = string(method)
		if why := badMethodName(e.Method); why != "" {
			return 5, badField("method name %q: %s", truncate(e.Method, MaxMethodName), why)
		}
		if len(d.methods) < maxIntern {
			d.methods[e.Method] = e.Method
		}
	}
	fp, err := r.uint()
	if err != nil {
		return 6, err
	}
	e.Fingerprint = fp
	flags, err := r.uint()
	if err != nil {
		return 7, err
	}
	if flags > math.MaxUint8 {
		return 7, badField("flags %d out of range", flags)
	}
	e.Flags = grain.MethodFlags(flags)
	timeout, err := r.int()
	if err != nil {
		return 8, err
	}
	if timeout < 0 {
		return 8, badField("negative timeout %d", timeout)
	}
	e.Timeout = time.Duration(timeout)
	hops, err := r.uint()
	if err != nil {
		return 9, err
	}
	if hops > math.MaxUint8 {
		return 9, badField("hop count %d out of range", hops)
	}
	e.Hops = uint8(hops)

	n, err := r.length(false)
	if err != nil {
		return 10, err
	}
	if n > MaxChainLen {
		if err := r.skipN(n); err != nil {
			return 10, err
		}
		return 10, tooLarge("call chain has %d entries, limit %d", n, MaxChainLen)
	}
	if n > 0 {
		e.Chain = make([]string, n)
		for i := range n {
			s, err := r.str()
			if err != nil {
				if isFieldError(err) {
					if err2 := r.skipN(n - i - 1); err2 != nil {
						return 10, err2
					}
				}
				return 10, err
			}
			e.Chain[i] = string(s)
		}
	}

	n, err = r.length(true)
	if err != nil {
		return 11, err
	}
	if n > MaxContextLen {
		if err := r.skipN(2 * n); err != nil {
			return 11, err
		}
		return 11, tooLarge("request context has %d entries, limit %d", n, MaxContextLen)
	}
	if n > 0 {
		e.Context = make(map[string]string, n)
		bytes := 0
		for i := range 2 * n {
			s, err := r.str()
			if err == nil {
				// Checked as it is read: the header limit would refuse
				// the envelope anyway, after copying every entry.
				if bytes += len(s); bytes > d.lim.MaxHeaderSize {
					err = tooLarge("request context over %d bytes, the header limit", d.lim.MaxHeaderSize)
				}
			}
			if err != nil {
				if isFieldError(err) {
					if err2 := r.skipN(2*n - i - 1); err2 != nil {
						return 11, err2
					}
				}
				return 11, err
			}
			if i%2 == 0 {
				key = s
			} else {
				e.Context[string(key)] = string(s)
			}
		}
	}

	body, err := d.body(r)
	if err != nil {
		return 12, err
	}
	e.Body = body
	return 12, nil
}

// response decodes fields 2.. of a response of n fields.
func (d *frameDecoder) response(r *reader, e *Envelope, n int) (int, error) {
	st, err := r.uint()
	if err != nil {
		return 3, err
	}
	if st > uint64(StatusNotHere) {
		return 3, badField("unknown status %d", st)
	}
	e.Status = Status(st)
	if e.Body, err = d.body(r); err != nil {
		return 4, err
	}
	for i, p := range [...]*string{&e.ErrCode, &e.ErrMessage, &e.Redirect.SiloID, &e.Redirect.Address} {
		s, err := r.str()
		if err != nil {
			return 5 + i, err
		}
		if len(s) > 0 {
			*p = string(s)
		}
	}
	if n < respFields {
		return minRespFields, nil
	}
	o, err := r.uint()
	if err != nil {
		return respFields, err
	}
	if o >= uint64(grain.OutcomeUnknown) && o <= uint64(grain.OutcomeFailed) {
		// An outcome this version does not know, or "ok" on an error,
		// is treated as unsaid.
		e.ErrOutcome = grain.Outcome(o)
	}
	return respFields, nil
}

// body reads a body and copies it out of the frame.
func (d *frameDecoder) body(r *reader) ([]byte, error) {
	b, err := r.bin()
	if err != nil {
		return nil, err
	}
	if len(b) > d.lim.MaxBodySize {
		return nil, tooLarge("body is %d bytes, limit %d", len(b), d.lim.MaxBodySize)
	}
	if len(b) == 0 {
		return nil, nil
	}
	return append([]byte(nil), b...), nil
}
