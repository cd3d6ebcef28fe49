package grain

import (
	"context"
	"maps"
	"strings"

	"github.com/granary-rt/granary/grain/internal/reqvalues"
)

// Bounds of the request values one call may carry (see WithRequestValue):
// at most MaxRequestValues entries, and at most MaxRequestValueBytes bytes
// of keys and values together.
const (
	MaxRequestValues     = 64
	MaxRequestValueBytes = 16 << 10
)

// ReservedRequestKeyPrefix starts the request-context keys the runtime
// keeps for itself (the caller's identity travels under them between
// silos). WithRequestValue refuses them, and a gateway refuses a client's
// call that carries one.
const ReservedRequestKeyPrefix = reqvalues.ReservedPrefix

// WithRequestValue returns a context whose calls carry the request value
// key=value, together with the values ctx already carried (a value set
// again for the same key replaces the old one). Request values travel with
// a call to its grain, in the same process or another: the grain reads
// them with RequestValue from the context its method receives, and the
// calls it makes with that context carry them on, so every grain further
// down the call's chain sees them too. Use them for what the whole chain
// needs to know: a trace id, a tenant, a locale. (Plain context.WithValue
// values do not cross processes.)
//
// A call whose values are over the bounds (MaxRequestValues entries,
// MaxRequestValueBytes bytes of keys and values) fails when it is made,
// in the same process or to another, with an error matching ErrTooLarge;
// it did not run.
//
// WithRequestValue panics if key is empty or starts with
// ReservedRequestKeyPrefix ("granary."): those keys belong to the runtime,
// whose entries (the caller's identity) user code must not be able to set.
func WithRequestValue(ctx context.Context, key, value string) context.Context {
	checkRequestKey(key)
	return reqvalues.Set(ctx, key, value)
}

// RequestValue returns the request value of key that ctx carries (see
// WithRequestValue): in a grain method, one its caller set, or any caller
// before it in the call's chain.
func RequestValue(ctx context.Context, key string) (string, bool) {
	return reqvalues.From(ctx).Get(key)
}

// RequestValues returns a copy of all the request values ctx carries, nil
// if it carries none.
func RequestValues(ctx context.Context) map[string]string {
	return maps.Clone(reqvalues.From(ctx).Map())
}

// RequestValueSize returns how many request values ctx carries and the
// bytes of their keys and values together, the two quantities the bounds
// (MaxRequestValues, MaxRequestValueBytes) limit.
func RequestValueSize(ctx context.Context) (n, bytes int) {
	v := reqvalues.From(ctx)
	return v.Len(), v.Bytes()
}

// WithRequestValues is WithRequestValue for every entry of values, with
// the same rules. The runtime uses it for the values a call arrives with.
func WithRequestValues(ctx context.Context, values map[string]string) context.Context {
	if len(values) == 0 {
		return ctx
	}
	old := reqvalues.From(ctx)
	m := make(map[string]string, old.Len()+len(values))
	maps.Copy(m, old.Map())
	for k, v := range values {
		checkRequestKey(k)
		m[k] = v
	}
	bytes := 0
	for k, v := range m {
		bytes += len(k) + len(v)
	}
	return reqvalues.With(ctx, m, bytes)
}

func checkRequestKey(key string) {
	if key == "" {
		panic("grain: WithRequestValue: empty key")
	}
	if strings.HasPrefix(key, reqvalues.ReservedPrefix) {
		panic("grain: WithRequestValue: key " + key + " starts with " + reqvalues.ReservedPrefix + ", which is reserved for the runtime")
	}
}
