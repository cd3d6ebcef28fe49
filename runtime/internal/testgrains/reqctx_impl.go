package testgrains

import (
	"context"
	"sync"
	"time"

	"github.com/granary-rt/granary/grain"
)

// blocks records the ReqCtx.Block calls of this process by token.
var (
	blocksMu sync.Mutex
	blocks   = map[string]*BlockRecord{}
)

type reqCtx struct{ c grain.Context }

// NewReqCtx returns the factory of ReqCtx grains.
func NewReqCtx() func(grain.Context) ReqCtx {
	return func(c grain.Context) ReqCtx { return &reqCtx{c: c} }
}

func (g *reqCtx) Seen(ctx context.Context) (Seen, error) {
	s := Seen{Silo: g.c.SiloID(), Values: grain.RequestValues(ctx)}
	if id, ok := grain.CallerIdentity(ctx); ok {
		s.Identity = id.Name
	}
	return s, nil
}

func (g *reqCtx) Relay(ctx context.Context, next string) (Seen, error) {
	return NewReqCtxRef(g.c, next).Seen(ctx)
}

func (g *reqCtx) Block(ctx context.Context, token string) error {
	r := &BlockRecord{Started: time.Now().UnixNano()}
	blocksMu.Lock()
	blocks[token] = r
	blocksMu.Unlock()
	<-ctx.Done()
	done := time.Now().UnixNano()
	blocksMu.Lock()
	r.Done, r.Err = done, ctx.Err().Error()
	blocksMu.Unlock()
	return ctx.Err()
}

func (g *reqCtx) RelayBlock(ctx context.Context, next, token string) error {
	return NewReqCtxRef(g.c, next).Block(ctx, token)
}

func (g *reqCtx) Blocked(ctx context.Context, token string) (BlockRecord, error) {
	blocksMu.Lock()
	defer blocksMu.Unlock()
	if r := blocks[token]; r != nil {
		return *r, nil
	}
	return BlockRecord{}, nil
}
