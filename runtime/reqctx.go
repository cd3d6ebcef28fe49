package runtime

import (
	"context"
	"fmt"
	"strings"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/internal/transport"
)

// Request values (grain.WithRequestValue) travel in an envelope's request
// context next to the runtime's own entries, whose keys start with
// reservedContextPrefix. Every process checks the values of a call it makes
// against the bounds (checkRequestValues) and the values of a call it
// receives (withRequestContext); the transport bounds the entries and the
// header's bytes before that.

// requestContext returns the request context of an envelope sent for a
// call made with ctx: its request values and, with identity set (a silo
// sending to a silo), the caller's identity.
func requestContext(ctx context.Context, identity bool) map[string]string {
	var m map[string]string
	if n, _ := grain.RequestValueSize(ctx); n > 0 {
		m = grain.RequestValues(ctx) // a copy: the envelope owns it
	}
	if !identity {
		return m
	}
	id := identityContext(ctx)
	if len(m) == 0 {
		return id
	}
	for k, v := range id {
		m[k] = v
	}
	return m
}

// checkRequestValues refuses a call whose request values are over the
// bounds, before it is sent or queued: the same error in process and
// across processes.
func checkRequestValues(ctx context.Context, call *grain.Call, md *grain.MethodDesc) error {
	n, bytes := grain.RequestValueSize(ctx)
	if n <= grain.MaxRequestValues && bytes <= grain.MaxRequestValueBytes {
		return nil
	}
	return fmt.Errorf("%w: call %s.%s: request values: %d entries of %d bytes, limit %d entries of %d bytes (grain.MaxRequestValues, grain.MaxRequestValueBytes)",
		grain.ErrTooLarge, call.Target, md.Name, n, bytes, grain.MaxRequestValues, grain.MaxRequestValueBytes)
}

// withRequestContext returns ctx carrying the request values of req, the
// entries of its request context outside reservedContextPrefix (those are
// the runtime's: see withEnvelopeIdentity). They came from the network:
// values over the bounds, or with an empty key, refuse the call.
func withRequestContext(ctx context.Context, req *transport.Envelope) (context.Context, error) {
	if len(req.Context) == 0 {
		return ctx, nil
	}
	n, bytes, reserved := 0, 0, 0
	for k, v := range req.Context {
		if strings.HasPrefix(k, reservedContextPrefix) {
			reserved++
			continue
		}
		if k == "" {
			return ctx, fmt.Errorf("%w: call to %s: a request value with an empty key", grain.ErrBadRequest, req.Target)
		}
		n++
		bytes += len(k) + len(v)
	}
	if n > grain.MaxRequestValues || bytes > grain.MaxRequestValueBytes {
		return ctx, fmt.Errorf("%w: call to %s: request values: %d entries of %d bytes, limit %d entries of %d bytes",
			grain.ErrTooLarge, req.Target, n, bytes, grain.MaxRequestValues, grain.MaxRequestValueBytes)
	}
	if n == 0 {
		return ctx, nil
	}
	m := req.Context // the envelope is ours; nothing else writes it
	if reserved > 0 {
		m = make(map[string]string, n)
		for k, v := range req.Context {
			if !strings.HasPrefix(k, reservedContextPrefix) {
				m[k] = v
			}
		}
	}
	return grain.WithRequestValues(ctx, m), nil
}
