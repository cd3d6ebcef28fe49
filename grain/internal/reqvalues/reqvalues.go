// Package reqvalues holds the request values of a context: the string
// entries grain.WithRequestValue sets, which the runtime carries with every
// call made with that context (see grain.RequestValue). The grain package
// is its public face; the runtime uses it directly to move the values
// between contexts and envelopes without copying them entry by entry.
package reqvalues

import "context"

// ReservedPrefix starts the request-context keys only the runtime sets
// (the caller's identity travels under them between silos).
const ReservedPrefix = "granary."

// Values is an immutable set of request values. The zero value and nil
// are empty.
type Values struct {
	m     map[string]string // never modified once the Values is shared
	bytes int               // sum of len(key)+len(value)
}

type ctxKey struct{}

// From returns the request values of ctx, nil if it has none.
func From(ctx context.Context) *Values {
	v, _ := ctx.Value(ctxKey{}).(*Values)
	return v
}

// Set returns ctx with key set to value, on top of the values it had.
func Set(ctx context.Context, key, value string) context.Context {
	old := From(ctx)
	m := make(map[string]string, old.Len()+1)
	n := old.Bytes()
	if old != nil {
		for k, v := range old.m {
			m[k] = v
		}
	}
	if prev, ok := m[key]; ok {
		n -= len(key) + len(prev)
	}
	m[key] = value
	return context.WithValue(ctx, ctxKey{}, &Values{m: m, bytes: n + len(key) + len(value)})
}

// With returns ctx carrying the values of m, which it takes ownership of
// (replacing the values ctx had). bytes must be the sum of the lengths of
// m's keys and values. An empty m leaves ctx as it is.
func With(ctx context.Context, m map[string]string, bytes int) context.Context {
	if len(m) == 0 {
		return ctx
	}
	return context.WithValue(ctx, ctxKey{}, &Values{m: m, bytes: bytes})
}

// Len returns the number of values.
func (v *Values) Len() int {
	if v == nil {
		return 0
	}
	return len(v.m)
}

// Bytes returns the sum of the lengths of the keys and the values.
func (v *Values) Bytes() int {
	if v == nil {
		return 0
	}
	return v.bytes
}

// Get returns the value of key.
func (v *Values) Get(key string) (string, bool) {
	if v == nil {
		return "", false
	}
	s, ok := v.m[key]
	return s, ok
}

// Map returns the values as a map that the caller must not modify (nil if
// there are none): it is shared by every context that carries them.
func (v *Values) Map() map[string]string {
	if v == nil {
		return nil
	}
	return v.m
}
