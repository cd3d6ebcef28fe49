package testgrains

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/granary-rt/granary/grain"
)

// hop implements Hop, HopReentrant and HopChain. Its code segments (a turn
// from its start to its first call, between calls, after the last) report
// to the observer, which counts two segments of one grain at once as a
// violation; segments also bump a plain field, so that the race detector
// sees two goroutines running one activation's code at once.
type hop struct {
	c     grain.Context
	obs   *Observer
	turns int // unsynchronised on purpose
}

// NewHopImpl returns an implementation of the Hop types reporting to obs
// (nil: to nobody, for benchmarks).
func NewHopImpl(c grain.Context, obs *Observer) *hop { return &hop{c: c, obs: obs} }

// RegisterHops registers the three Hop types, reporting to obs: test.Hop
// with opts, test.HopReentrant also with grain.Reentrant, test.HopChain
// also with grain.WithCallChainReentrancy.
func RegisterHops(r grain.Registry, obs *Observer, opts ...grain.TypeOption) {
	RegisterHop(r, func(c grain.Context) Hop { return &hop{c: c, obs: obs} }, opts...)
	RegisterHopReentrant(r, func(c grain.Context) HopReentrant { return &hop{c: c, obs: obs} },
		slices.Concat(opts, []grain.TypeOption{grain.Reentrant()})...)
	RegisterHopChain(r, func(c grain.Context) HopChain { return &hop{c: c, obs: obs} },
		slices.Concat(opts, []grain.TypeOption{grain.WithCallChainReentrancy()})...)
}

func (h *hop) enter() {
	if h.obs != nil {
		h.obs.enter(h.c.ID())
	}
	h.turns++
}

// OnActivate counts the activation (Observer.Activations).
func (h *hop) OnActivate(ctx context.Context) error {
	if h.obs == nil {
		return nil
	}
	return h.obs.activated(h.c.ID())
}

func (h *hop) exit() {
	if h.obs != nil {
		h.obs.exit(h.c.ID())
	}
}

func (h *hop) Call(ctx context.Context, path []string) (string, error) {
	return h.walk(ctx, path, "Call")
}
func (h *hop) Read(ctx context.Context, path []string) (string, error) {
	return h.walk(ctx, path, "Read")
}
func (h *hop) Peek(ctx context.Context, path []string) (string, error) {
	return h.walk(ctx, path, "Peek")
}

func (h *hop) Turns(ctx context.Context) (int, error) {
	h.enter()
	defer h.exit()
	return h.turns, nil
}

func (h *hop) walk(ctx context.Context, path []string, method string) (string, error) {
	h.enter()
	defer h.exit()
	me := h.c.ID().Key
	if len(path) == 0 {
		return me, nil
	}
	h.exit() // not running while it waits
	rest, err := h.next(ctx, path[0], path[1:], method)
	h.enter()
	if err != nil {
		return "", err
	}
	return me + ">" + rest, nil
}

// next calls the grain of entry with rest, by the same method when it is a
// Hop type.
func (h *hop) next(ctx context.Context, entry string, rest []string, method string) (string, error) {
	if entry == "panic" {
		panic("test: hop told to panic")
	}
	if b, ok := strings.CutPrefix(entry, "wait:"); ok {
		if err := NewProbeRef(h.c, b).Wait(ctx, b); err != nil {
			return "", err
		}
		return b, nil
	}
	return CallHop(ctx, h.c, entry, method, rest...)
}

// CallHop calls method (Call, Read or Peek) of the Hop grain id (of any of
// the three Hop types) with path, through caller.
func CallHop(ctx context.Context, caller grain.Caller, id, method string, path ...string) (string, error) {
	gid, err := grain.ParseID(id)
	if err != nil {
		return "", err
	}
	var call, read, peek func(context.Context, []string) (string, error)
	switch gid.Type {
	case "test.Hop":
		r := NewHopRef(caller, gid.Key)
		call, read, peek = r.Call, r.Read, r.Peek
	case "test.HopReentrant":
		r := NewHopReentrantRef(caller, gid.Key)
		call, read, peek = r.Call, r.Read, r.Peek
	case "test.HopChain":
		r := NewHopChainRef(caller, gid.Key)
		call, read, peek = r.Call, r.Read, r.Peek
	default:
		return "", fmt.Errorf("%w: %q is not a Hop type", grain.ErrUnknownGrainType, gid.Type)
	}
	switch method {
	case "Read":
		return read(ctx, path)
	case "Peek":
		return peek(ctx, path)
	}
	return call(ctx, path)
}
