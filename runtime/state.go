package runtime

import (
	"context"
	"fmt"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/storage"
)

// stateStore binds one declared state of one activation to its provider.
type stateStore struct {
	p   storage.Provider
	key storage.Key
	err error // set when the state names an unknown provider
}

func (s *Silo) stateStore(id grain.ID, name string, cfg grain.StateConfig) grain.StateStore {
	pname := cfg.Storage
	if pname == "" {
		pname = DefaultStorage
	}
	st := &stateStore{key: storage.Key{GrainType: id.Type, GrainKey: id.Key, State: name}}
	if st.p = s.storage[pname]; st.p == nil {
		st.err = fmt.Errorf("runtime: state %q of %s uses storage provider %q, which is not configured", name, id, pname)
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
	if st.err != nil {
		return "", st.err
	}
	return st.p.Write(ctx, st.key, data, etag)
}

func (st *stateStore) Clear(ctx context.Context, etag string) error {
	if st.err != nil {
		return st.err
	}
	return st.p.Clear(ctx, st.key, etag)
}
