package directory

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/granary-rt/granary/grain"
)

// DefaultMaxBatch is the default number of operations Etcd sends in one
// transaction: one under etcd's default --max-txn-ops (128), because etcd
// counts a nested transaction's operations against what the outer one
// leaves of that budget.
const DefaultMaxBatch = 127

// DefaultMaxQueue is the default number of operations that may wait for a
// transaction, per batcher (one for writes, one for lookups).
const DefaultMaxQueue = 4096

// maxBatchBytes bounds the keys and values of one batch, well under etcd's
// default 1.5 MiB request limit.
const maxBatchBytes = 512 << 10

// batchTimeout bounds a batch whose callers set no deadline of their own.
const batchTimeout = 30 * time.Second

// A batcher sends concurrent etcd operations in one transaction, group
// commit style. A caller that finds fewer than maxInflight transactions in
// flight starts a sender at once (a lone caller pays no added latency);
// the others queue, and a sender whose transaction returns sends next
// whatever queued up meanwhile, then ends when the queue is empty. The
// queue holds at most maxQueue operations (etcd slow or unreachable):
// beyond it a caller fails at once with an error wrapping
// grain.ErrOverloaded. Every
// caller waits for its own answer or its own context, whichever comes
// first; a caller that gives up before its operation is sent is dropped
// from the queue.
//
// With distinct set, the operations of one transaction touch distinct keys
// (etcd refuses a transaction that writes a key twice): a second operation
// on a key waits for the next transaction. Reads need not.
type batcher struct {
	cli         *clientv3.Client
	maxInflight int
	maxQueue    int
	distinct    bool

	mu       sync.Mutex
	queue    []*batchOp
	inflight int
	max      int // operations per transaction; halved if etcd refuses
}

// Op states: a queued op is taken by a sender or abandoned by its caller,
// whichever comes first.
const (
	opQueued int32 = iota
	opTaken
	opAbandoned
)

type batchOp struct {
	ctx   context.Context
	key   string
	op    clientv3.Op
	size  int
	state atomic.Int32
	done  chan struct{} // closed when resp or err is set
	resp  *etcdserverpb.ResponseOp
	err   error
}

func newBatcher(cli *clientv3.Client, max, maxInflight, maxQueue int, distinct bool) *batcher {
	return &batcher{cli: cli, max: max, maxInflight: maxInflight, maxQueue: maxQueue, distinct: distinct}
}

// do runs op on key as part of a transaction and returns op's response.
func (b *batcher) do(ctx context.Context, key string, op clientv3.Op, size int) (*etcdserverpb.ResponseOp, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	if len(b.queue) >= b.maxQueue {
		n := len(b.queue)
		b.mu.Unlock()
		return nil, fmt.Errorf("directory: %d operations wait for etcd already: %w", n, grain.ErrOverloaded)
	}
	o := &batchOp{ctx: ctx, key: key, op: op, size: size, done: make(chan struct{})}
	b.queue = append(b.queue, o)
	if b.inflight < b.maxInflight {
		b.inflight++
		batch := b.takeLocked()
		b.mu.Unlock()
		go b.sendAll(batch)
	} else {
		b.mu.Unlock()
	}
	select {
	case <-o.done:
		return o.resp, o.err
	case <-ctx.Done():
		// Still queued: dropped. Taken: its answer, when it comes, is.
		o.state.CompareAndSwap(opQueued, opAbandoned)
		return nil, ctx.Err()
	}
}

// sendAll sends batch, then the batches that queued up meanwhile, until
// the queue is empty.
func (b *batcher) sendAll(batch []*batchOp) {
	for len(batch) > 0 {
		b.send(batch)
		for _, o := range batch {
			close(o.done)
		}
		b.mu.Lock()
		batch = b.takeLocked()
		if len(batch) == 0 {
			b.inflight--
		}
		b.mu.Unlock()
	}
}

// takeLocked removes up to b.max queued ops (on distinct keys, if
// b.distinct) from the queue, oldest first; abandoned ops are dropped on
// the way. It takes at least one op if any is queued.
func (b *batcher) takeLocked() []*batchOp {
	var batch []*batchOp
	var keys map[string]struct{}
	if b.distinct {
		keys = make(map[string]struct{}, min(len(b.queue), b.max))
	}
	bytes := 0
	kept := b.queue[:0]
	for _, o := range b.queue {
		if o.state.Load() == opAbandoned {
			continue
		}
		_, dup := keys[o.key]
		if dup || len(batch) >= b.max || (len(batch) > 0 && bytes+o.size > maxBatchBytes) ||
			!o.state.CompareAndSwap(opQueued, opTaken) {
			if o.state.Load() == opQueued {
				kept = append(kept, o)
			}
			continue
		}
		batch = append(batch, o)
		if keys != nil {
			keys[o.key] = struct{}{}
		}
		bytes += o.size
	}
	clear(b.queue[len(kept):])
	b.queue = kept
	return batch
}

// send runs batch as one transaction and sets each op's result.
func (b *batcher) send(batch []*batchOp) {
	ctx, cancel := batchContext(batch)
	defer cancel()
	if len(batch) == 1 {
		// Alone: sent as itself, not nested in a transaction, which etcd
		// serves a little faster.
		batch[0].resp, batch[0].err = do(ctx, b.cli, batch[0].op)
		return
	}
	ops := make([]clientv3.Op, len(batch))
	for i, o := range batch {
		ops[i] = o.op
	}
	resp, err := b.cli.Txn(ctx).Then(ops...).Commit()
	if errors.Is(err, rpctypes.ErrTooManyOps) && len(batch) > 1 {
		// The server allows fewer operations per transaction than we
		// assumed: halve, and send the two halves apart.
		b.mu.Lock()
		b.max = max(1, min(b.max, len(batch)/2))
		b.mu.Unlock()
		b.send(batch[:len(batch)/2])
		b.send(batch[len(batch)/2:])
		return
	}
	for i, o := range batch {
		switch {
		case err != nil:
			o.err = err
		case i < len(resp.Responses):
			o.resp = resp.Responses[i]
		default:
			o.err = errors.New("etcd returned fewer responses than operations")
		}
	}
}

// do sends op alone and returns its response as a transaction would.
func do(ctx context.Context, cli *clientv3.Client, op clientv3.Op) (*etcdserverpb.ResponseOp, error) {
	r, err := cli.Do(ctx, op)
	if err != nil {
		return nil, err
	}
	switch {
	case r.Get() != nil:
		return &etcdserverpb.ResponseOp{Response: &etcdserverpb.ResponseOp_ResponseRange{
			ResponseRange: (*etcdserverpb.RangeResponse)(r.Get())}}, nil
	case r.Txn() != nil:
		return &etcdserverpb.ResponseOp{Response: &etcdserverpb.ResponseOp_ResponseTxn{
			ResponseTxn: (*etcdserverpb.TxnResponse)(r.Txn())}}, nil
	}
	return nil, errors.New("etcd answered an operation the directory does not send")
}

// batchContext is the context of one transaction: not cancelled by any one
// caller (the others still wait for it), ending at the latest deadline
// among the callers' (batchTimeout from now for a caller without one), and
// never later than batchTimeout from now.
func batchContext(batch []*batchOp) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, o := range batch {
		d, ok := o.ctx.Deadline()
		if !ok {
			d = time.Now().Add(batchTimeout)
		}
		if d.After(latest) {
			latest = d
		}
	}
	if limit := time.Now().Add(batchTimeout); latest.After(limit) {
		latest = limit // a caller asking for an hour does not hold a sender that long
	}
	return context.WithDeadline(context.WithoutCancel(batch[0].ctx), latest)
}
