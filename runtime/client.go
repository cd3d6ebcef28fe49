package runtime

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/granary-rt/granary/directory"
	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/cluster"
	"github.com/granary-rt/granary/runtime/internal/transport"
)

// ClientConfig configures a client: frontend code (HTTP handlers, jobs,
// CLIs) calling grains from its own process.
type ClientConfig struct {
	// Cluster is the cluster to call. Default "dev".
	Cluster string
	// Etcd says where the cluster's etcd is: the client watches the
	// membership there and reads the grain directory, so it sends each call
	// straight to the silo hosting the grain. Required unless Gateways is
	// set. A client never starts an embedded etcd.
	Etcd EtcdConfig
	// Gateways is a static list of silo addresses to send calls to instead
	// of using etcd; a gateway routes each call (answering "try silo X"
	// when another silo hosts the grain).
	Gateways []string
	// TLS secures the connections to silos: the client verifies their
	// certificates against TLS.CAFile (or the system roots; TLS.ServerName
	// is the name they must hold, default the host dialed) and presents
	// TLS.CertFile to silos that require a client certificate. Default
	// nil: plaintext.
	TLS *TLSConfig
	// ResponseTimeout is the deadline of calls whose context has none.
	// Default 30s.
	ResponseTimeout time.Duration
	// Logger receives the client's logs. Default: no logs.
	Logger *zap.Logger
}

func (c *ClientConfig) validate() error {
	if c.Cluster == "" {
		c.Cluster = DefaultCluster
	}
	if len(c.Etcd.Endpoints) == 0 && len(c.Gateways) == 0 {
		return errors.New("runtime: client config: give etcd endpoints or gateway addresses")
	}
	if c.ResponseTimeout <= 0 {
		c.ResponseTimeout = DefaultResponseTimeout
	}
	if c.Etcd.DialTimeout <= 0 {
		c.Etcd.DialTimeout = DefaultDialTimeout
	}
	if len(c.Etcd.Endpoints) > 0 || c.Etcd.TLS != nil {
		if err := c.Etcd.validate("ClientConfig.Etcd"); err != nil {
			return fmt.Errorf("runtime: client config: %w", err)
		}
	}
	if err := c.TLS.validate("ClientConfig.TLS", false); err != nil {
		return fmt.Errorf("runtime: client config: %w", err)
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return nil
}

// Client calls grains hosted by a cluster, from another process. It
// implements grain.Caller; hold one for the life of the process. It is safe
// for concurrent use.
type Client struct {
	cfg    ClientConfig
	log    *zap.Logger
	etcd   *clientv3.Client
	view   *cluster.View
	tc     *transport.Client
	router *router // without directory and view with static gateways
	next   atomic.Uint64
	closed atomic.Bool
}

var _ grain.Caller = (*Client)(nil)

// Connect returns a client of the cluster described by cfg. With etcd
// endpoints it waits until it has read the membership; unreachable etcd is
// an error after the dial timeout.
func Connect(ctx context.Context, cfg ClientConfig) (_ *Client, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, log: cfg.Logger}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	creds, err := cfg.TLS.clientCredentials("ClientConfig.TLS", c.log)
	if err != nil {
		return nil, err
	}
	if c.tc, err = transport.NewClient(transport.ClientConfig{Logger: c.log, Credentials: creds}); err != nil {
		return nil, fmt.Errorf("runtime: client transport: %w", err)
	}
	if len(cfg.Gateways) > 0 {
		c.router = &router{tc: c.tc}
		return c, nil
	}
	prefix := ClusterPrefix(cfg.Cluster)
	ecfg, err := etcdClientConfig(cfg.Etcd, cfg.Etcd.Endpoints, "ClientConfig.Etcd", c.log)
	if err != nil {
		return nil, err
	}
	c.etcd, err = clientv3.New(ecfg.cfg)
	if err != nil {
		return nil, fmt.Errorf("runtime: etcd client for %v: %w", cfg.Etcd.Endpoints, err)
	}
	vctx, cancel := context.WithTimeout(ctx, cfg.Etcd.DialTimeout)
	defer cancel()
	if _, err := c.etcd.Get(vctx, prefix+"ping", clientv3.WithCountOnly()); err != nil {
		return nil, ecfg.unreachable(ctx, err)
	}
	if c.view, err = cluster.WatchView(context.WithoutCancel(ctx), c.etcd, prefix, cluster.WithViewLogger(c.log)); err != nil {
		return nil, fmt.Errorf("runtime: membership view: %w", err)
	}
	dir, err := directory.NewEtcd(c.etcd, directory.EtcdConfig{Prefix: prefix, Logger: c.log})
	if err != nil {
		return nil, fmt.Errorf("runtime: grain directory: %w", err)
	}
	c.router = &router{dir: dir, view: c.view, tc: c.tc}
	return c, nil
}

// View returns the client's membership view (nil with static gateways).
func (c *Client) View() *cluster.View { return c.view }

// Invoke implements grain.Caller.
func (c *Client) Invoke(ctx context.Context, call *grain.Call) (any, error) {
	if c.closed.Load() {
		return nil, fmt.Errorf("%w: client is closed", grain.ErrSiloUnavailable)
	}
	if call.Type == nil || call.Type.Name != call.Target.Type {
		return nil, fmt.Errorf("%w: %q (calling %s)", grain.ErrUnknownGrainType, call.Target.Type, call.Target)
	}
	md := call.Method
	if md == nil {
		return nil, fmt.Errorf("%w: call to %s names no method", grain.ErrUnknownMethod, call.Target)
	}
	if _, ok := ctx.Deadline(); !ok && !md.Flags.Has(grain.OneWay) {
		// No timer per call: the transport enforces the deadline.
		var release func()
		ctx, release = transport.WithTimeout(ctx, c.cfg.ResponseTimeout)
		defer release()
	}
	pick := func() (route, error) {
		if len(c.cfg.Gateways) > 0 {
			return route{silo: cluster.SiloInfo{Address: c.gateway()}}, nil
		}
		return c.router.resolve(ctx, call.Target, grain.PlaceRandom, false)
	}
	return c.router.invoke(ctx, call, md, pick, func() (any, error) {
		return nil, fmt.Errorf("%w: a client hosts no grains", grain.ErrUnknownGrainType)
	})
}

// gateway picks a static gateway, round robin from a random start.
func (c *Client) gateway() string {
	n := c.next.Add(1)
	if n == 1 {
		n = c.next.Add(uint64(rand.IntN(len(c.cfg.Gateways))))
	}
	return c.cfg.Gateways[n%uint64(len(c.cfg.Gateways))]
}

// Close releases the client's connections. Calls in flight fail.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	var errs []error
	if c.tc != nil {
		errs = append(errs, c.tc.Close())
	}
	if c.view != nil {
		errs = append(errs, c.view.Close())
	}
	if c.etcd != nil {
		errs = append(errs, c.etcd.Close())
	}
	return errors.Join(errs...)
}
