package directory

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultMaxBatch is the default number of operations Etcd sends in one
// transaction: etcd's default --max-txn-ops.
const DefaultMaxBatch = 128

// maxBatchBytes bounds the keys and values of one batch, well under etcd's
// default 1.5 MiB request limit.
const maxBatchBytes = 512 << 10

// batchTimeout bounds a batch whose callers set no deadline of their own.
const batchTimeout = 30 * time.Second

// A batcher sends concurrent etcd operations in one transaction, group
// commit style. A caller that finds fewer than maxInflight transactions in
// flight sends at once (a lone caller pays no added latency); the others
// queue, and when a transaction returns, the first waiting caller sends
// the queue that has built up meanwhile. No goroutine of its own.
//
// Operations of one transaction touch distinct keys (etcd refuses a
// transaction that writes a key twice); a second operation on a key waits
// for the next transaction.
type batcher struct {
	cli         *clientv3.Client
	maxInflight int

	mu       sync.Mutex
	queue    []*batchOp
	inflight int
	max      int // operations per transaction; halved if etcd refuses
}

// Op states. The owner of a queued op may abandon it (its context ended);
// a sender takes it; the sender that finishes hands the lead to one.
const (
	opQueued int32 = iota
	opTaken
	opLead
	opAbandoned
)

type batchOp struct {
	ctx   context.Context
	key   string
	op    clientv3.Op
	size  int
	state atomic.Int32
	// wake receives true when the op's owner must send the next batch,
	// false when the op is done (resp or err set).
	wake chan bool
	resp *etcdserverpb.ResponseOp
	err  error
}

func newBatcher(cli *clientv3.Client, max, maxInflight int) *batcher {
	return &batcher{cli: cli, max: max, maxInflight: maxInflight}
}

// do runs op on key as part of a transaction and returns op's response.
func (b *batcher) do(ctx context.Context, key string, op clientv3.Op, size int) (*etcdserverpb.ResponseOp, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o := &batchOp{ctx: ctx, key: key, op: op, size: size, wake: make(chan bool, 1)}
	b.mu.Lock()
	b.queue = append(b.queue, o)
	if b.inflight < b.maxInflight {
		b.inflight++
		o.state.Store(opLead)
		b.mu.Unlock()
		b.lead(o)
		return o.resp, o.err
	}
	b.mu.Unlock()
	select {
	case lead := <-o.wake:
		if lead {
			b.lead(o)
		}
		return o.resp, o.err
	case <-ctx.Done():
		if o.state.CompareAndSwap(opQueued, opAbandoned) {
			return nil, ctx.Err()
		}
		if o.state.Load() == opLead {
			// Handed the lead as our context ended: the queue still
			// needs a sender.
			<-o.wake
			b.lead(o)
			return o.resp, o.err
		}
		// Taken: the result, when it comes, is dropped.
		return nil, ctx.Err()
	}
}

// lead sends batches until self is done, then hands the lead to the first
// queued op, or leaves the in-flight slot if none is queued.
func (b *batcher) lead(self *batchOp) {
	for {
		b.mu.Lock()
		batch := b.takeLocked(self)
		b.mu.Unlock()
		if len(batch) > 0 {
			b.send(batch)
		}
		for _, o := range batch {
			if o != self {
				o.wake <- false
			}
		}
		if self.resp != nil || self.err != nil || len(batch) == 0 {
			break
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, o := range b.queue {
		if o.state.CompareAndSwap(opQueued, opLead) {
			o.wake <- true
			return
		}
		if i == 0 && o.state.Load() == opAbandoned {
			b.queue[0] = nil
			b.queue = b.queue[1:]
		}
		// Else it leads already (handed the lead, not yet sending).
	}
	b.inflight--
}

// takeLocked removes up to b.max ops on distinct keys from the queue,
// self first; abandoned ops are dropped on the way.
func (b *batcher) takeLocked(self *batchOp) []*batchOp {
	var batch []*batchOp
	keys := make(map[string]struct{}, min(len(b.queue), b.max))
	bytes := 0
	add := func(o *batchOp) {
		batch = append(batch, o)
		keys[o.key] = struct{}{}
		bytes += o.size
	}
	rest := b.queue[:0]
	for _, o := range b.queue {
		if o == self && self.resp == nil && self.err == nil {
			add(o)
		} else if o != self {
			rest = append(rest, o)
		}
	}
	kept := rest[:0]
	for _, o := range rest {
		st := o.state.Load()
		if st == opAbandoned {
			continue
		}
		_, dup := keys[o.key]
		if dup || st != opQueued || len(batch) >= b.max || (len(batch) > 0 && bytes+o.size > maxBatchBytes) ||
			!o.state.CompareAndSwap(opQueued, opTaken) {
			if o.state.Load() != opAbandoned {
				kept = append(kept, o)
			}
			continue
		}
		add(o)
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
// among the callers', or after batchTimeout if one has none.
func batchContext(batch []*batchOp) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, o := range batch {
		d, ok := o.ctx.Deadline()
		if !ok {
			latest = time.Now().Add(batchTimeout)
			break
		}
		if d.After(latest) {
			latest = d
		}
	}
	return context.WithDeadline(context.WithoutCancel(batch[0].ctx), latest)
}
