package runtime

import (
	"context"
	"errors"
	"fmt"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/storage"
)

// stateStore binds one declared state of one activation to its provider.
// It refuses to write once the silo is fenced, bounds every write by the
// fence deadline, and marks its activation when a write fails: a stale
// etag shows another activation wrote since this one read (conflict), and
// any failed write or clear leaves the in-memory value ahead of storage,
// by an amount nobody knows when the outcome is unknown (writeFailed).
type stateStore struct {
	a   *activation
	p   storage.Provider
	key storage.Key
	err error // set when the state names an unknown provider
}

func (s *Silo) stateStore(a *activation, name string, cfg grain.StateConfig) *stateStore {
	pname := cfg.Storage
	if pname == "" {
		pname = DefaultStorage
	}
	st := &stateStore{a: a, key: storage.Key{GrainType: a.id.Type, GrainKey: a.id.Key, State: name}}
	if a.pool != nil {
		// Reading it fails, and with it the activation.
		st.err = fmt.Errorf("runtime: state %q of %s: grain type %s is a stateless worker (grain.StatelessWorker), whose activations hold no identity-bound state",
			name, a.id, a.typ.desc.Name)
		return st
	}
	if st.p = s.storage[pname]; st.p == nil {
		st.err = fmt.Errorf("runtime: state %q of %s uses storage provider %q, which is not configured", name, a.id, pname)
	}
	return st
}

func (st *stateStore) Read(ctx context.Context) ([]byte, string, error) {
	if st.err != nil {
		return nil, "", st.err
	}
	return st.p.Read(ctx, st.key)
}

func (st *stateStore) Write(ctx context.Context, data []byte, etag string) (string, error) {
	ctx, cancel, err := st.writable(ctx)
	if err != nil {
		return "", err
	}
	defer cancel()
	etag, err = st.p.Write(ctx, st.key, data, etag)
	err = unconfirmed(err)
	st.noteFailure(err)
	return etag, err
}

func (st *stateStore) Clear(ctx context.Context, etag string) error {
	ctx, cancel, err := st.writable(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	err = unconfirmed(st.p.Clear(ctx, st.key, etag))
	st.noteFailure(err)
	return err
}

// unconfirmed gives a provider's write error a code if it has none: a
// provider codes what it knows (ErrConflict, ErrTooLarge); anything else (a
// lost connection, a server error) leaves it unknown whether the write
// landed.
func unconfirmed(err error) error {
	if err == nil || grain.CodeOf(err) != "" {
		return err
	}
	return fmt.Errorf("%w: storage did not confirm the write: %w", grain.ErrOutcomeUnknown, err)
}

// writable checks that the activation may still write and bounds ctx by the
// silo's fence deadline: a write that would land after it could overwrite
// the state of a new activation elsewhere.
func (st *stateStore) writable(ctx context.Context) (context.Context, context.CancelFunc, error) {
	if st.err != nil {
		return nil, nil, st.err
	}
	ctx, cancel, err := st.a.unfenced(ctx, "state "+st.key.State+" not written")
	if err != nil {
		st.noteFailure(err)
	}
	return ctx, cancel, err
}

// unfenced bounds ctx by the fence deadline of the activation's
// incarnation, and ends it when the incarnation is fenced early (its lease
// lost), or fails with ErrSiloUnavailable (what says what was not done) if
// it is fenced already: a write (of state, of the reminder table) that
// lands after the fence could overwrite what a new activation elsewhere
// wrote. Every write of an activation goes through it.
func (a *activation) unfenced(ctx context.Context, what string) (context.Context, context.CancelFunc, error) {
	if a.fenced() {
		return nil, nil, fmt.Errorf("%w: silo %s is fenced; %s of %s", grain.ErrSiloUnavailable, a.silo.id, what, a.id)
	}
	ctx, cancel := context.WithDeadline(ctx, a.inc.member.FenceDeadline())
	if a.inc.ctx == nil {
		return ctx, cancel, nil
	}
	stop := context.AfterFunc(a.inc.ctx, cancel)
	return ctx, func() { stop(); cancel() }, nil
}

// noteFailure marks the activation after a failed write or clear.
func (st *stateStore) noteFailure(err error) {
	if err == nil {
		return
	}
	a := st.a
	if errors.Is(err, grain.ErrConflict) {
		a.conflict.Store(true)
	}
	// Keep the first failure, unless a later one may have landed where
	// the first surely did not: the turn's outcome is the worse.
	if a.writeFailed == nil || writeOutcome(a.writeFailed) != grain.OutcomeUnknown && writeOutcome(err) == grain.OutcomeUnknown {
		a.writeFailed = fmt.Errorf("state %q: %w", st.key.State, err)
	}
}
