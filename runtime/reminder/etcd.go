package reminder

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/connectivity"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/grain/codec"
)

const (
	// DefaultPageSize is EtcdConfig.PageSize when it is zero.
	DefaultPageSize = 1000
	// DefaultMaxTxnOps is EtcdConfig.MaxTxnOps when it is zero: etcd's
	// default --max-txn-ops.
	DefaultMaxTxnOps = 128
	// MaxKeyBytes bounds the etcd key of a reminder (prefix and escaped
	// type, key and name). Upsert refuses a longer one with ErrInvalid.
	MaxKeyBytes = 8 << 10

	// progressLayout formats progress in UTC with a fixed width, so that
	// etcd's byte-wise comparison of values orders it by time.
	progressLayout = "2006-01-02T15:04:05.000000000Z"
)

// EtcdConfig configures an etcd table.
type EtcdConfig struct {
	// Prefix is the cluster's key prefix, e.g. "/granary/<cluster>/"; it
	// must end in "/". Reminders live under Prefix+"reminders/", progress
	// under Prefix+"reminder-progress/". Required.
	Prefix string
	// PageSize is how many reminders one range read of ListBucket or
	// ListGrain returns at most; they read page after page. Default
	// DefaultPageSize.
	PageSize int
	// MaxTxnOps is the etcd server's --max-txn-ops, at least 3.
	// SaveProgress saves at most MaxTxnOps-2 buckets per transaction (each
	// bucket is a transaction nested two deep, and etcd counts the
	// operations of every level against the limit). Default
	// DefaultMaxTxnOps, etcd's default: 126 buckets per transaction.
	MaxTxnOps int
	// Logger receives debug logs (conflicts, failed calls). Default: none.
	Logger *zap.Logger
}

func (c *EtcdConfig) validate() error {
	switch {
	case c.Prefix == "":
		return errors.New(`reminder: EtcdConfig.Prefix is required, e.g. "/granary/<cluster>/"`)
	case !strings.HasSuffix(c.Prefix, "/"):
		return fmt.Errorf(`reminder: EtcdConfig.Prefix %q must end in "/"`, c.Prefix)
	case len(c.Prefix) > MaxKeyBytes/2:
		return fmt.Errorf("reminder: EtcdConfig.Prefix is %d bytes; at most %d", len(c.Prefix), MaxKeyBytes/2)
	case c.PageSize < 0:
		return fmt.Errorf("reminder: EtcdConfig.PageSize is %d; it must not be negative (0 means %d)", c.PageSize, DefaultPageSize)
	case c.MaxTxnOps < 0 || c.MaxTxnOps == 1 || c.MaxTxnOps == 2:
		return fmt.Errorf("reminder: EtcdConfig.MaxTxnOps is %d; it must be at least 3 (0 means %d)", c.MaxTxnOps, DefaultMaxTxnOps)
	}
	if c.PageSize == 0 {
		c.PageSize = DefaultPageSize
	}
	if c.MaxTxnOps == 0 {
		c.MaxTxnOps = DefaultMaxTxnOps
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return nil
}

// Etcd is the etcd-backed Table. A reminder is one key,
//
//	<Prefix>reminders/<bucket>/<type>/<key>/<name>
//
// with the bucket as two lower-case hex digits and type, key and name
// escaped with url.PathEscape (which escapes "/" and "%", so distinct
// grains and names have distinct keys). ListBucket is then a range read of
// one prefix and ListGrain of a longer one. The value is the msgpack
// encoding of the reminder; its etag is the key's ModRevision, and
// compare-and-set is a transaction on it. A bucket's progress is the key
// <Prefix>reminder-progress/<bucket>, holding the time in UTC as
// "2006-01-02T15:04:05.000000000Z", whose byte order is its time order.
//
// Etcd is safe for concurrent use and starts no goroutines.
type Etcd struct {
	cli *clientv3.Client
	cfg EtcdConfig
	log *zap.Logger
}

var _ Table = (*Etcd)(nil)

// NewEtcd returns a table over cli. cli stays owned by the caller, who
// closes it after the last call.
func NewEtcd(cli *clientv3.Client, cfg EtcdConfig) (*Etcd, error) {
	if cli == nil {
		return nil, errors.New("reminder: nil etcd client")
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	t := &Etcd{cli: cli, cfg: cfg, log: cfg.Logger.Named("reminder")}
	t.log.Debug("etcd table ready", zap.String("prefix", cfg.Prefix),
		zap.Int("page_size", cfg.PageSize), zap.Int("max_txn_ops", cfg.MaxTxnOps))
	return t, nil
}

// Key returns the etcd key of the reminder (id, name).
func (t *Etcd) Key(id grain.ID, name string) string {
	return t.grainPrefix(id) + url.PathEscape(name)
}

// ProgressKey returns the etcd key of bucket b's progress.
func (t *Etcd) ProgressKey(b int) string {
	return fmt.Sprintf("%sreminder-progress/%02x", t.cfg.Prefix, b)
}

func (t *Etcd) bucketPrefix(b int) string {
	return fmt.Sprintf("%sreminders/%02x/", t.cfg.Prefix, b)
}

func (t *Etcd) grainPrefix(id grain.ID) string {
	return t.bucketPrefix(BucketOf(Hash(id))) + url.PathEscape(id.Type) + "/" + url.PathEscape(id.Key) + "/"
}

// record is the stored value of a reminder. Fields are encoded by name, so
// fields can be added later.
type record struct {
	Type   string        `msgpack:"type"`
	Key    string        `msgpack:"key"`
	Name   string        `msgpack:"name"`
	Start  time.Time     `msgpack:"start"`
	Period time.Duration `msgpack:"period"`
}

// Upsert writes the reminder, in a transaction comparing its ModRevision
// with e.Etag if e.Etag is not empty, and returns the new ModRevision.
func (t *Etcd) Upsert(ctx context.Context, e Entry) (string, error) {
	if err := e.Validate(); err != nil {
		return "", err
	}
	const op = "upsert"
	what := describe(e.Grain, e.Name)
	key := t.Key(e.Grain, e.Name)
	if len(key) > MaxKeyBytes {
		return "", fmt.Errorf("%w: reminder %s: etcd key is %d bytes, limit is %d", ErrInvalid, what, len(key), MaxKeyBytes)
	}
	val, err := msgpack.Marshal(record{Type: e.Grain.Type, Key: e.Grain.Key, Name: e.Name, Start: e.Start.UTC(), Period: e.Period})
	if err != nil {
		return "", fmt.Errorf("reminder: %s %s: encode: %w", op, what, err)
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("reminder: %s %s: %w", op, what, err)
	}
	if e.Etag == "" {
		resp, err := t.cli.Put(ctx, key, string(val))
		if err != nil {
			return "", t.callError(ctx, op, what, err)
		}
		return formatEtag(resp.Header.Revision), nil
	}
	guard, err := t.compare(op, e.Grain, e.Name, key, e.Etag)
	if err != nil {
		return "", err
	}
	resp, err := t.cli.Txn(ctx).
		If(guard).
		Then(clientv3.OpPut(key, string(val))).
		Else(clientv3.OpGet(key, clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		return "", t.callError(ctx, op, what, err)
	}
	if !resp.Succeeded {
		return "", t.conflict(op, e.Grain, e.Name, e.Etag, resp)
	}
	return formatEtag(resp.Header.Revision), nil
}

// Remove deletes the reminder, in a transaction comparing its ModRevision
// with etag if etag is not empty.
func (t *Etcd) Remove(ctx context.Context, id grain.ID, name, etag string) (bool, error) {
	const op = "remove"
	what := describe(id, name)
	key := t.Key(id, name)
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("reminder: %s %s: %w", op, what, err)
	}
	if etag == "" {
		resp, err := t.cli.Delete(ctx, key)
		if err != nil {
			return false, t.callError(ctx, op, what, err)
		}
		return resp.Deleted > 0, nil
	}
	guard, err := t.compare(op, id, name, key, etag)
	if err != nil {
		return false, err
	}
	resp, err := t.cli.Txn(ctx).
		If(guard).
		Then(clientv3.OpDelete(key)).
		Else(clientv3.OpGet(key, clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		return false, t.callError(ctx, op, what, err)
	}
	if !resp.Succeeded {
		return false, t.conflict(op, id, name, etag, resp)
	}
	return true, nil
}

// Get reads the reminder (id, name). The read is linearizable.
func (t *Etcd) Get(ctx context.Context, id grain.ID, name string) (Entry, bool, error) {
	const op = "get"
	what := describe(id, name)
	if err := ctx.Err(); err != nil {
		return Entry{}, false, fmt.Errorf("reminder: %s %s: %w", op, what, err)
	}
	resp, err := t.cli.Get(ctx, t.Key(id, name))
	if err != nil {
		return Entry{}, false, t.callError(ctx, op, what, err)
	}
	if len(resp.Kvs) == 0 {
		return Entry{}, false, nil
	}
	e, err := decodeEntry(resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
	if err != nil {
		return Entry{}, false, fmt.Errorf("reminder: %s %s: key %s: %w", op, what, resp.Kvs[0].Key, err)
	}
	return e, true, nil
}

// ListGrain reads id's reminders, a page of EtcdConfig.PageSize at a time,
// and sorts them by name.
func (t *Etcd) ListGrain(ctx context.Context, id grain.ID) ([]Entry, error) {
	es, err := t.list(ctx, "list", id.String(), t.grainPrefix(id))
	if err != nil {
		return nil, err
	}
	// Escaping does not keep byte order ("a b" < "a!", "a%20b" > "a!").
	slices.SortFunc(es, func(a, b Entry) int { return cmp.Compare(a.Name, b.Name) })
	return es, nil
}

// ListBucket reads bucket b's reminders, a page of EtcdConfig.PageSize at a
// time. Each page is a linearizable read of its own: a reminder that exists
// for the whole call is returned exactly once; one upserted or removed
// meanwhile may or may not be.
func (t *Etcd) ListBucket(ctx context.Context, b int) ([]Entry, error) {
	if err := CheckBucket(b); err != nil {
		return nil, err
	}
	return t.list(ctx, "list", fmt.Sprintf("bucket %d", b), t.bucketPrefix(b))
}

// list reads every reminder under prefix, page after page.
func (t *Etcd) list(ctx context.Context, op, what, prefix string) ([]Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("reminder: %s %s: %w", op, what, err)
	}
	end := clientv3.GetPrefixRangeEnd(prefix)
	var out []Entry
	for from := prefix; ; {
		resp, err := t.cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithLimit(int64(t.cfg.PageSize)))
		if err != nil {
			return nil, t.callError(ctx, op, what, err)
		}
		if out == nil {
			out = make([]Entry, 0, len(resp.Kvs))
		}
		for _, kv := range resp.Kvs {
			e, err := decodeEntry(kv.Value, kv.ModRevision)
			if err != nil {
				return nil, fmt.Errorf("reminder: %s %s: key %s: %w", op, what, kv.Key, err)
			}
			out = append(out, e)
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out, nil
		}
		// Keys come in byte order: the next page starts just after the
		// last key of this one.
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// SaveProgress raises the progress of the buckets to through. Each
// transaction covers up to EtcdConfig.MaxTxnOps-2 buckets (so all 256
// buckets take three with etcd's defaults) and, per bucket, writes through
// only if the key is missing or holds an earlier time, decided on the
// server: no bucket's progress moves backwards, whatever runs concurrently,
// and no retry is needed. If a later transaction fails, the buckets of the
// earlier ones stay saved. A zero through saves nothing.
func (t *Etcd) SaveProgress(ctx context.Context, buckets []int, through time.Time) error {
	const op = "save progress"
	for _, b := range buckets {
		if err := CheckBucket(b); err != nil {
			return err
		}
	}
	through = through.UTC()
	if y := through.Year(); !through.IsZero() && (y < 1 || y > 9999) {
		return fmt.Errorf("%w: progress %v is outside the years 1 to 9999", ErrInvalid, through)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("reminder: %s: %w", op, err)
	}
	if through.IsZero() || len(buckets) == 0 {
		return nil
	}
	val := through.Format(progressLayout)
	// etcd refuses a transaction that puts one key twice.
	uniq := slices.Compact(slices.Sorted(slices.Values(buckets)))
	// etcd checks a nested transaction against MaxTxnOps less the
	// operations of the levels above: n buckets at the top, one operation
	// at the next level, one at the last, so n <= MaxTxnOps-2.
	for chunk := range slices.Chunk(uniq, t.cfg.MaxTxnOps-2) {
		ops := make([]clientv3.Op, len(chunk))
		for i, b := range chunk {
			key := t.ProgressKey(b)
			put := clientv3.OpPut(key, val)
			// If missing, put; else if earlier, put.
			ops[i] = clientv3.OpTxn(
				[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)},
				[]clientv3.Op{put},
				[]clientv3.Op{clientv3.OpTxn(
					[]clientv3.Cmp{clientv3.Compare(clientv3.Value(key), "<", val)},
					[]clientv3.Op{put},
					nil)})
		}
		what := fmt.Sprintf("of %d buckets (%d to %d) through %s", len(chunk), chunk[0], chunk[len(chunk)-1], val)
		if _, err := t.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return t.callError(ctx, op, what, err)
		}
	}
	return nil
}

// LoadProgress reads bucket b's progress.
func (t *Etcd) LoadProgress(ctx context.Context, b int) (time.Time, error) {
	if err := CheckBucket(b); err != nil {
		return time.Time{}, err
	}
	const op = "load progress"
	what := fmt.Sprintf("of bucket %d", b)
	if err := ctx.Err(); err != nil {
		return time.Time{}, fmt.Errorf("reminder: %s %s: %w", op, what, err)
	}
	resp, err := t.cli.Get(ctx, t.ProgressKey(b))
	if err != nil {
		return time.Time{}, t.callError(ctx, op, what, err)
	}
	if len(resp.Kvs) == 0 {
		return time.Time{}, nil
	}
	p, err := time.Parse(progressLayout, string(resp.Kvs[0].Value))
	if err != nil {
		return time.Time{}, fmt.Errorf("reminder: %s %s: key %s: %w", op, what, resp.Kvs[0].Key, err)
	}
	return p, nil
}

func decodeEntry(val []byte, rev int64) (Entry, error) {
	var r record
	if err := codec.Unmarshal(val, &r); err != nil {
		return Entry{}, fmt.Errorf("decode: %w", err)
	}
	return Entry{
		Grain:  grain.ID{Type: r.Type, Key: r.Key},
		Name:   r.Name,
		Start:  r.Start.UTC(),
		Period: r.Period,
		Etag:   formatEtag(rev),
	}, nil
}

// compare returns the transaction guard for a non-empty etag: the key's
// ModRevision must equal it. An etag that is not the canonical decimal form
// of a positive revision cannot be any reminder's etag: it fails with
// ErrConflict without a round trip. (Revision 0 in particular must be
// refused: ModRevision == 0 holds for a missing key.)
func (t *Etcd) compare(op string, id grain.ID, name, key, etag string) (clientv3.Cmp, error) {
	rev, err := strconv.ParseInt(etag, 10, 64)
	if err != nil || rev <= 0 || formatEtag(rev) != etag {
		t.log.Debug("malformed etag", zap.String("op", op), zap.String("reminder", describe(id, name)), zap.String("etag", etag))
		return clientv3.Cmp{}, fmt.Errorf("reminder: %s %s: malformed etag %q (no reminder can have it): %w",
			op, describe(id, name), etag, ErrConflict)
	}
	return clientv3.Compare(clientv3.ModRevision(key), "=", rev), nil
}

// conflict builds the ErrConflict of a transaction whose compare failed; its
// Else branch read the key (keys only) to report the current etag.
func (t *Etcd) conflict(op string, id grain.ID, name, etag string, resp *clientv3.TxnResponse) error {
	current := ""
	if len(resp.Responses) == 1 {
		if r := resp.Responses[0].GetResponseRange(); r != nil && len(r.Kvs) > 0 {
			current = formatEtag(r.Kvs[0].ModRevision)
		}
	}
	t.log.Debug("etag conflict", zap.String("op", op), zap.String("reminder", describe(id, name)),
		zap.String("etag", etag), zap.String("current_etag", current))
	return conflict(op, id, name, etag, current)
}

// callError wraps an error of the etcd client. It names the endpoints and,
// when the context ended while the client was not connected, the connection
// state, so an unreachable cluster is recognisable (etcd's client waits for
// a connection until the context ends, and then reports only the context's
// error). The result matches ctx.Err() when the context ended, whatever the
// client reported.
func (t *Etcd) callError(ctx context.Context, op, what string, err error) error {
	where := "etcd " + strings.Join(t.cli.Endpoints(), ",")
	if cerr := ctx.Err(); cerr != nil {
		if !errors.Is(err, cerr) {
			err = fmt.Errorf("%w (%w)", cerr, err)
		}
		if conn := t.cli.ActiveConnection(); conn != nil {
			if st := conn.GetState(); st != connectivity.Ready {
				where += ", connection " + st.String()
			}
		}
	}
	t.log.Debug("etcd call failed", zap.String("op", op), zap.String("what", what), zap.String("etcd", where), zap.Error(err))
	return fmt.Errorf("reminder: %s %s (%s): %w", op, what, where, err)
}

func formatEtag(rev int64) string { return strconv.FormatInt(rev, 10) }
