package grain

import (
	"context"
	"errors"
)

// CallInfo describes a call to the filters it passes through.
type CallInfo struct {
	// Target is the grain called.
	Target ID
	// Method is the method called: its wire name (Method.Name), flags
	// (Method.Flags: read-only, one-way, interleave) and signature. A
	// reminder tick is the method named ReminderMethod.
	Method *MethodDesc
	// Args is the argument tuple (a pointer to a struct with one field per
	// parameter after the context). Filters must not modify it.
	Args any
}

// Invoker runs the rest of a call: the next filter, or the call itself.
type Invoker func(ctx context.Context) (any, error)

// Filter intercepts calls, in the style of a gRPC interceptor: it sees the
// call (CallInfo), its context (request values, deadline, and
// CallerIdentity where one exists) and decides what happens:
//
//	func audit(ctx context.Context, call *grain.CallInfo, next grain.Invoker) (any, error) {
//		id, _ := grain.CallerIdentity(ctx)
//		if call.Method.Name == "Close" && id.Name != "admin" {
//			return nil, grain.ErrPermissionDenied // refused: the method does not run
//		}
//		reply, err := next(ctx) // may pass a decorated context
//		log.Info("call", zap.Stringer("grain", call.Target), zap.String("method", call.Method.Name), zap.Error(err))
//		return reply, err
//	}
//
// A filter that returns without calling next refuses the call: its error
// is reported as did not run (OutcomeNotRun) unless it carries an outcome
// of its own (WithOutcome); returning a nil error without calling next
// answers the call with the filter's reply, which must have the form next
// returns: a *Reply[T] holding the method's result of type T (nil for a
// method that returns only an error). Calling next more than once runs the
// call more than once.
//
// Incoming filters (runtime.Config.IncomingFilters for every grain of a
// silo, WithIncomingFilters for one type) run on the silo that hosts the
// grain, inside the call's turn: they are grain code, under the execution
// rule, and a panic in one is the grain's panic. Outgoing filters
// (runtime.Config.OutgoingFilters, runtime.ClientConfig.OutgoingFilters)
// run in the caller's process before the call is routed.
type Filter func(ctx context.Context, call *CallInfo, next Invoker) (any, error)

// WithIncomingFilters adds filters that every call to the grain type passes
// through, after the silo's (runtime.Config.IncomingFilters), in order.
func WithIncomingFilters(fs ...Filter) TypeOption {
	return typeOptionFunc(func(c *TypeConfig) { c.IncomingFilters = append(c.IncomingFilters, fs...) })
}

// RunFilters runs call through filters, in order, and then final. The
// runtime calls it; it is exported for tests of filters.
func RunFilters(ctx context.Context, filters []Filter, call *CallInfo, final Invoker) (any, error) {
	if len(filters) == 0 {
		return final(ctx)
	}
	ran := false
	var step func(i int) Invoker
	step = func(i int) Invoker {
		if i == len(filters) {
			return func(ctx context.Context) (any, error) {
				ran = true
				return final(ctx)
			}
		}
		return func(ctx context.Context) (any, error) { return filters[i](ctx, call, step(i+1)) }
	}
	reply, err := step(0)(ctx)
	if err != nil && !ran {
		var o outcomer
		if !errors.As(err, &o) || o.grainOutcome() == 0 {
			err = WithOutcome(err, OutcomeNotRun)
		}
	}
	return reply, err
}
