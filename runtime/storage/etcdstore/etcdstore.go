package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/connectivity"

	"github.com/granary-rt/granary/runtime/storage"
)

const (
	// DefaultMaxValueBytes is the value size limit when Config.MaxValueBytes
	// is zero.
	DefaultMaxValueBytes = 1 << 20
	// MaxValueBytesCeiling is the largest Config.MaxValueBytes accepted:
	// etcd's default request limit (--max-request-bytes, 1.5 MiB) less room
	// for the rest of the write transaction, which carries the key three
	// times (at most MaxKeyBytes each) and protobuf framing.
	MaxValueBytesCeiling = etcdMaxRequestBytes - requestOverhead
	// MaxKeyBytes bounds the length of the etcd key of a record (prefix and
	// escaped components). A longer key fails with storage.ErrTooLarge.
	MaxKeyBytes = 8 << 10

	etcdMaxRequestBytes = 3 << 19  // 1.5 MiB, etcd's default --max-request-bytes
	requestOverhead     = 64 << 10 // >= 3*MaxKeyBytes + framing, with room to spare
)

// Config configures a Provider.
type Config struct {
	// Prefix is prepended to every key; it must end in "/". Use the
	// cluster's prefix, e.g. "/granary/<cluster>/": records then live
	// under "<Prefix>state/". Required.
	Prefix string
	// MaxValueBytes is the largest value Write accepts, in bytes.
	// Default DefaultMaxValueBytes (1 MiB); at most MaxValueBytesCeiling.
	// A server started with a smaller --max-request-bytes refuses large
	// writes itself; that error also wraps storage.ErrTooLarge.
	MaxValueBytes int
	// Logger receives debug logs (conflicts, failed calls). Default: none.
	Logger *zap.Logger
}

// validate fills defaults and rejects nonsense.
func (c *Config) validate() error {
	switch {
	case c.Prefix == "":
		return errors.New(`etcdstore: Config.Prefix is required, e.g. "/granary/<cluster>/"`)
	case !strings.HasSuffix(c.Prefix, "/"):
		return fmt.Errorf("etcdstore: Config.Prefix %q must end in \"/\"", c.Prefix)
	case len(c.Prefix) > MaxKeyBytes/2:
		return fmt.Errorf("etcdstore: Config.Prefix is %d bytes; at most %d", len(c.Prefix), MaxKeyBytes/2)
	case c.MaxValueBytes < 0:
		return fmt.Errorf("etcdstore: Config.MaxValueBytes is %d; it must not be negative (0 means the default, %d)",
			c.MaxValueBytes, DefaultMaxValueBytes)
	case c.MaxValueBytes > MaxValueBytesCeiling:
		return fmt.Errorf("etcdstore: Config.MaxValueBytes is %d; at most %d fits in one etcd request (default limit %d bytes)",
			c.MaxValueBytes, MaxValueBytesCeiling, etcdMaxRequestBytes)
	}
	if c.MaxValueBytes == 0 {
		c.MaxValueBytes = DefaultMaxValueBytes
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return nil
}

// Provider stores grain state in etcd. It is safe for concurrent use.
type Provider struct {
	cli *clientv3.Client
	cfg Config
	log *zap.Logger
}

var (
	_ storage.Provider = (*Provider)(nil)
	_ storage.Limiter  = (*Provider)(nil)
)

// New returns a provider that uses cli. The provider does not own cli: the
// caller closes it after the last call.
func New(cli *clientv3.Client, cfg Config) (*Provider, error) {
	if cli == nil {
		return nil, errors.New("etcdstore: nil etcd client")
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	p := &Provider{cli: cli, cfg: cfg, log: cfg.Logger.Named("etcdstore")}
	p.log.Debug("provider ready", zap.String("prefix", cfg.Prefix), zap.Int("max_value_bytes", cfg.MaxValueBytes))
	return p, nil
}

// MaxValueBytes returns the configured value size limit.
func (p *Provider) MaxValueBytes() int { return p.cfg.MaxValueBytes }

// EtcdKey returns the etcd key that holds the record k.
func (p *Provider) EtcdKey(k storage.Key) string {
	return p.cfg.Prefix + "state/" + url.PathEscape(k.GrainType) + "/" +
		url.PathEscape(k.GrainKey) + "/" + url.PathEscape(k.State)
}

// Read returns the record's data and etag (its ModRevision), or
// (nil, "", nil) if there is no record. The read is linearizable.
func (p *Provider) Read(ctx context.Context, k storage.Key) ([]byte, string, error) {
	key, err := p.key("read", k)
	if err != nil {
		return nil, "", err
	}
	if err := ctx.Err(); err != nil {
		return nil, "", fmt.Errorf("etcdstore: read %s: %w", k, err)
	}
	resp, err := p.cli.Get(ctx, key)
	if err != nil {
		return nil, "", p.callError(ctx, "read", k, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, "", nil
	}
	kv := resp.Kvs[0]
	data := kv.Value
	if data == nil {
		data = []byte{} // an empty value is still a record
	}
	return data, formatEtag(kv.ModRevision), nil
}

// Write stores data if etag is the record's current etag ("" for a record
// that must not exist yet) and returns the new etag. A stale or malformed
// etag fails with an error wrapping storage.ErrConflict that names the key
// and, if the record exists, its current etag.
func (p *Provider) Write(ctx context.Context, k storage.Key, data []byte, etag string) (string, error) {
	key, err := p.key("write", k)
	if err != nil {
		return "", err
	}
	if len(data) > p.cfg.MaxValueBytes {
		return "", fmt.Errorf("etcdstore: write %s: value is %d bytes, limit is %d: %w",
			k, len(data), p.cfg.MaxValueBytes, storage.ErrTooLarge)
	}
	cmp, err := p.compare("write", k, key, etag)
	if err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("etcdstore: write %s: %w", k, err)
	}
	resp, err := p.cli.Txn(ctx).
		If(cmp).
		Then(clientv3.OpPut(key, string(data))).
		Else(clientv3.OpGet(key, clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		return "", p.callError(ctx, "write", k, err)
	}
	if !resp.Succeeded {
		return "", p.conflict("write", k, etag, resp)
	}
	return formatEtag(resp.Header.Revision), nil
}

// Clear deletes the record if etag is its current etag. Clearing a missing
// record with etag "" succeeds. Otherwise it fails like Write.
func (p *Provider) Clear(ctx context.Context, k storage.Key, etag string) error {
	key, err := p.key("clear", k)
	if err != nil {
		return err
	}
	cmp, err := p.compare("clear", k, key, etag)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("etcdstore: clear %s: %w", k, err)
	}
	var then []clientv3.Op
	if etag != "" {
		then = append(then, clientv3.OpDelete(key))
	}
	resp, err := p.cli.Txn(ctx).
		If(cmp).
		Then(then...).
		Else(clientv3.OpGet(key, clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		return p.callError(ctx, "clear", k, err)
	}
	if !resp.Succeeded {
		return p.conflict("clear", k, etag, resp)
	}
	return nil
}

func (p *Provider) key(op string, k storage.Key) (string, error) {
	key := p.EtcdKey(k)
	if len(key) > MaxKeyBytes {
		return "", fmt.Errorf("etcdstore: %s %s: etcd key is %d bytes, limit is %d: %w",
			op, k, len(key), MaxKeyBytes, storage.ErrTooLarge)
	}
	return key, nil
}

// compare returns the transaction guard for etag: the key must not exist
// for "", else its ModRevision must equal the etag. An etag that is not the
// canonical decimal form of a positive revision cannot be any record's
// etag: it fails with ErrConflict without a round trip. (Revision 0 in
// particular must be refused: ModRevision == 0 holds for a missing key.)
func (p *Provider) compare(op string, k storage.Key, key, etag string) (clientv3.Cmp, error) {
	if etag == "" {
		return clientv3.Compare(clientv3.CreateRevision(key), "=", 0), nil
	}
	rev, err := strconv.ParseInt(etag, 10, 64)
	if err != nil || rev <= 0 || formatEtag(rev) != etag {
		p.log.Debug("malformed etag", zap.String("op", op), zap.Stringer("key", k), zap.String("etag", etag))
		return clientv3.Cmp{}, fmt.Errorf("etcdstore: %s %s: malformed etag %q (no record can have it): %w",
			op, k, etag, storage.ErrConflict)
	}
	return clientv3.Compare(clientv3.ModRevision(key), "=", rev), nil
}

// conflict builds the ErrConflict of a transaction whose compare failed; its
// Else branch read the key (keys only) to report the current etag.
func (p *Provider) conflict(op string, k storage.Key, etag string, resp *clientv3.TxnResponse) error {
	current := ""
	if len(resp.Responses) == 1 {
		if r := resp.Responses[0].GetResponseRange(); r != nil && len(r.Kvs) > 0 {
			current = formatEtag(r.Kvs[0].ModRevision)
		}
	}
	p.log.Debug("etag conflict", zap.String("op", op), zap.Stringer("key", k),
		zap.String("etag", etag), zap.String("current_etag", current))
	if current == "" {
		return fmt.Errorf("etcdstore: %s %s: etag %q given but there is no record: %w", op, k, etag, storage.ErrConflict)
	}
	return fmt.Errorf("etcdstore: %s %s: etag %q given but the current etag is %q: %w",
		op, k, etag, current, storage.ErrConflict)
}

// callError wraps an error of the etcd client. It names the endpoints and,
// when the context ended while the client was not connected, the
// connection state, so an unreachable cluster is recognisable (etcd's
// client waits for a connection until the context ends, and then reports
// only the context's error). The result matches ctx.Err() when the context
// ended, whatever the client reported.
func (p *Provider) callError(ctx context.Context, op string, k storage.Key, err error) error {
	if errors.Is(err, rpctypes.ErrRequestTooLarge) {
		err = fmt.Errorf("%w (%w)", err, storage.ErrTooLarge)
	}
	where := "etcd " + strings.Join(p.cli.Endpoints(), ",")
	if cerr := ctx.Err(); cerr != nil {
		if !errors.Is(err, cerr) {
			err = fmt.Errorf("%w (%w)", cerr, err)
		}
		if conn := p.cli.ActiveConnection(); conn != nil {
			if st := conn.GetState(); st != connectivity.Ready {
				where += ", connection " + st.String()
			}
		}
	}
	p.log.Debug("etcd call failed", zap.String("op", op), zap.Stringer("key", k), zap.String("etcd", where), zap.Error(err))
	return fmt.Errorf("etcdstore: %s %s (%s): %w", op, k, where, err)
}

func formatEtag(rev int64) string { return strconv.FormatInt(rev, 10) }
