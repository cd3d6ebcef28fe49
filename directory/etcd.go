package directory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/vmihailenco/msgpack/v5"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/grain/codec"
)

// ErrNoLease is returned by Etcd.Register when the directory was created
// without a lease: such a directory is read-only (clients look grains up,
// only silos register them). errors.Is-checkable.
var ErrNoLease = errors.New("directory: read-only: no lease configured")

// EtcdConfig configures an etcd directory.
type EtcdConfig struct {
	// Prefix is the cluster's key prefix, e.g. "/granary/<cluster>/"; it
	// must end with "/". Entries live under Prefix+"dir/".
	Prefix string
	// Lease is the hosting silo's etcd lease: every entry Register writes
	// is attached to it, so a silo's entries vanish with its lease. Zero
	// makes a read-only directory (for clients): Register fails with
	// ErrNoLease.
	Lease clientv3.LeaseID
	// CacheSize bounds the number of cached entries. 0 means
	// DefaultCacheSize; a negative value disables the cache.
	CacheSize int
	// MaxBatch is the most operations sent in one etcd transaction:
	// concurrent registrations, unregistrations and lookups (cache misses)
	// are grouped, so that etcd commits many in one round. 0 means
	// DefaultMaxBatch (127: etcd's default --max-txn-ops is 128, and a
	// registration is a nested transaction); 1 sends each alone.
	// Etcd halves it by itself if the server refuses a batch as too large.
	MaxBatch int
	// MaxQueue bounds the operations waiting for a transaction, for
	// writes and for lookups each; beyond it (etcd slow or unreachable)
	// Register, Lookup and Unregister fail at once with an error wrapping
	// grain.ErrOverloaded. 0 means DefaultMaxQueue (4096).
	MaxQueue int
	// Logger receives debug logs. Default: no logs.
	Logger *zap.Logger
}

func (c *EtcdConfig) validate() error {
	if c.Prefix == "" {
		return errors.New("directory: EtcdConfig.Prefix is empty; want e.g. \"/granary/<cluster>/\"")
	}
	if !strings.HasSuffix(c.Prefix, "/") {
		return fmt.Errorf("directory: EtcdConfig.Prefix %q must end with \"/\"", c.Prefix)
	}
	if c.Lease < 0 {
		return fmt.Errorf("directory: EtcdConfig.Lease %d is negative", c.Lease)
	}
	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.MaxBatch < 0 {
		return fmt.Errorf("directory: EtcdConfig.MaxBatch %d is negative", c.MaxBatch)
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.MaxQueue < 0 {
		return fmt.Errorf("directory: EtcdConfig.MaxQueue %d is negative", c.MaxQueue)
	}
	if c.MaxQueue == 0 {
		c.MaxQueue = DefaultMaxQueue
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return nil
}

// Etcd is the etcd-backed Directory. Each entry is one key,
// Prefix+"dir/"+PathEscape(type)+"/"+PathEscape(key), holding the
// msgpack-encoded Entry and attached to the registering silo's lease.
// Lookups are served from a bounded local cache when possible.
//
// Concurrent operations are grouped into one etcd transaction each (see
// EtcdConfig.MaxBatch); a lone operation is sent at once.
//
// Etcd is safe for concurrent use. It runs a goroutine per transaction in
// flight (at most two for writes and two for lookups), none while idle.
type Etcd struct {
	cli    *clientv3.Client
	prefix string // Prefix + "dir/"
	lease  clientv3.LeaseID
	cache  *cache
	log    *zap.Logger
	writes *batcher // Register, Unregister
	reads  *batcher // Lookup
}

// Transactions in flight at once per batcher: while one is in etcd, the
// next batch builds up; two keep etcd busy without waiting on each other.
const batchesInflight = 2

var _ Directory = (*Etcd)(nil)

// NewEtcd returns a directory over cli. cli stays owned by the caller.
func NewEtcd(cli *clientv3.Client, cfg EtcdConfig) (*Etcd, error) {
	if cli == nil {
		return nil, errors.New("directory: nil etcd client")
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Etcd{
		cli:    cli,
		prefix: cfg.Prefix + "dir/",
		lease:  cfg.Lease,
		cache:  newCache(cfg.CacheSize),
		log:    cfg.Logger,
		writes: newBatcher(cli, cfg.MaxBatch, batchesInflight, cfg.MaxQueue, true),
		reads:  newBatcher(cli, cfg.MaxBatch, batchesInflight, cfg.MaxQueue, false),
	}, nil
}

// Key returns the etcd key of id's entry.
func (d *Etcd) Key(id grain.ID) string {
	return d.prefix + url.PathEscape(id.Type) + "/" + url.PathEscape(id.Key)
}

// Register records e for id unless an entry exists, in one etcd
// transaction, and returns the registered entry: e if it won, the existing
// one otherwise. Either way the result is cached.
func (d *Etcd) Register(ctx context.Context, id grain.ID, e Entry) (Entry, error) {
	if err := checkRegister(id, e); err != nil {
		return Entry{}, err
	}
	if d.lease == 0 {
		return Entry{}, fmt.Errorf("directory: register %s: %w", id, ErrNoLease)
	}
	val, err := encodeEntry(e)
	if err != nil {
		return Entry{}, fmt.Errorf("directory: register %s: %w", id, err)
	}
	key := d.Key(id)
	epoch := d.cache.epoch(id)
	op := clientv3.OpTxn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)},
		[]clientv3.Op{clientv3.OpPut(key, string(val), clientv3.WithLease(d.lease))},
		[]clientv3.Op{clientv3.OpGet(key)})
	r, err := d.writes.do(ctx, key, op, len(key)+len(val))
	if err != nil {
		return Entry{}, fmt.Errorf("directory: register %s: %w", id, err)
	}
	resp := r.GetResponseTxn()
	if resp == nil {
		return Entry{}, fmt.Errorf("directory: register %s: etcd answered %T to a transaction", id, r.GetResponse())
	}
	winner := e
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().GetKvs()
		if len(kvs) == 0 {
			// Cannot happen: the transaction's comparison and its Else
			// branch see the same revision.
			return Entry{}, fmt.Errorf("directory: register %s: entry exists but read back empty", id)
		}
		if winner, err = decodeEntry(kvs[0].Value); err != nil {
			return Entry{}, fmt.Errorf("directory: register %s: %w", id, err)
		}
	}
	d.cache.fill(id, winner, epoch)
	return winner, nil
}

// Lookup returns id's entry from the cache, or else from etcd, caching
// what it found. An absent entry is not cached.
func (d *Etcd) Lookup(ctx context.Context, id grain.ID) (Entry, bool, error) {
	if e, ok := d.cache.get(id); ok {
		return e, true, nil
	}
	epoch := d.cache.epoch(id)
	key := d.Key(id)
	r, err := d.reads.do(ctx, key, clientv3.OpGet(key), len(key))
	if err != nil {
		return Entry{}, false, fmt.Errorf("directory: lookup %s: %w", id, err)
	}
	resp := r.GetResponseRange()
	if resp == nil {
		return Entry{}, false, fmt.Errorf("directory: lookup %s: etcd answered %T to a read", id, r.GetResponse())
	}
	if len(resp.Kvs) == 0 {
		return Entry{}, false, nil
	}
	e, err := decodeEntry(resp.Kvs[0].Value)
	if err != nil {
		return Entry{}, false, fmt.Errorf("directory: lookup %s: %w", id, err)
	}
	d.cache.fill(id, e, epoch)
	return e, true, nil
}

// Unregister deletes id's entry if its value is still e, in one etcd
// transaction, and drops the cached entry whatever the outcome.
//
// Should the stored bytes differ from this process's encoding of an equal
// entry (a silo of another version wrote it), Unregister falls back to
// deleting by the key's modification revision.
func (d *Etcd) Unregister(ctx context.Context, id grain.ID, e Entry) error {
	defer d.cache.drop(id)
	val, err := encodeEntry(e)
	if err != nil {
		return fmt.Errorf("directory: unregister %s: %w", id, err)
	}
	key := d.Key(id)
	op := clientv3.OpTxn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.Value(key), "=", string(val))},
		[]clientv3.Op{clientv3.OpDelete(key)},
		[]clientv3.Op{clientv3.OpGet(key)})
	r, err := d.writes.do(ctx, key, op, len(key)+len(val))
	if err != nil {
		return fmt.Errorf("directory: unregister %s: %w", id, err)
	}
	resp := r.GetResponseTxn()
	if resp == nil {
		return fmt.Errorf("directory: unregister %s: etcd answered %T to a transaction", id, r.GetResponse())
	}
	if resp.Succeeded {
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 0 || bytes.Equal(kvs[0].Value, val) {
		return nil
	}
	if cur, err := decodeEntry(kvs[0].Value); err != nil || cur != e {
		return nil // someone else's: nothing to do
	}
	d.log.Debug("directory: entry encoded differently; unregistering by revision",
		zap.Stringer("grain_id", id), zap.String("silo_id", e.SiloID))
	_, err = d.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", kvs[0].ModRevision)).
		Then(clientv3.OpDelete(key)).
		Commit()
	if err != nil {
		return fmt.Errorf("directory: unregister %s: %w", id, err)
	}
	return nil
}

// Invalidate drops id's cached entry, if any, so that the next Lookup
// reads etcd.
func (d *Etcd) Invalidate(id grain.ID) { d.cache.drop(id) }

// Cached implements Cacher: the cached entry for id, without a request to
// etcd.
func (d *Etcd) Cached(id grain.ID) (Entry, bool) { return d.cache.get(id) }

// Remember implements Rememberer: it caches e as id's entry, as a routing
// hint, unless the cache already holds one.
func (d *Etcd) Remember(id grain.ID, e Entry) { d.cache.fillIfAbsent(id, e) }

// CacheLen returns the number of cached entries.
func (d *Etcd) CacheLen() int { return d.cache.len() }

func checkRegister(id grain.ID, e Entry) error {
	if id.Type == "" {
		return fmt.Errorf("directory: register %q: grain id has no type", id)
	}
	if e.SiloID == "" {
		return fmt.Errorf("directory: register %s: entry has no silo id", id)
	}
	return nil
}

func encodeEntry(e Entry) ([]byte, error) {
	b, err := msgpack.Marshal(&e)
	if err != nil {
		return nil, fmt.Errorf("encode entry: %w", err)
	}
	return b, nil
}

func decodeEntry(b []byte) (Entry, error) {
	var e Entry
	if err := codec.Unmarshal(b, &e); err != nil {
		return Entry{}, fmt.Errorf("decode entry: %w", err)
	}
	return e, nil
}
