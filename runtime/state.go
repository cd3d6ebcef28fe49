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
// fence deadline, and marks its activation when a write meets a stale etag.
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
	st.noteConflict(err)
	return etag, err
}

func (st *stateStore) Clear(ctx context.Context, etag string) error {
	ctx, cancel, err := st.writable(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	err = st.p.Clear(ctx, st.key, etag)
	st.noteConflict(err)
	return err
}

// writable checks that the activation may still write and bounds ctx by the
// silo's fence deadline: a write that would land after it could overwrite
// the state of a new activation elsewhere.
func (st *stateStore) writable(ctx context.Context) (context.Context, context.CancelFunc, error) {
	if st.err != nil {
		return nil, nil, st.err
	}
	a := st.a
	if a.fenced() {
		return nil, nil, fmt.Errorf("%w: silo %s is fenced; state of %s not written", grain.ErrSiloUnavailable, a.silo.id, a.id)
	}
	ctx, cancel := context.WithDeadline(ctx, a.inc.member.FenceDeadline())
	return ctx, cancel, nil
}

func (st *stateStore) noteConflict(err error) {
	if errors.Is(err, grain.ErrConflict) {
		st.a.conflict.Store(true)
	}
}
