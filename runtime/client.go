package runtime

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

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
	// cluster's membership there (the keys under
	// cluster.MembershipPrefix(ClusterPrefix(Cluster)), and nothing else),
	// so an etcd user that may only read that prefix is enough; a client
	// never writes etcd. Required unless Gateways is set. A client never
	// starts an embedded etcd.
	Etcd EtcdConfig
	// Gateways is a static list of silo addresses to send calls to instead
	// of using etcd.
	Gateways []string
	// TLS secures the connections to silos: the client verifies their
	// certificates against TLS.CAFile (or the system roots; TLS.ServerName
	// is the name they must hold, default the host dialed) and presents
	// TLS.CertFile to silos that require a client certificate. Default
	// nil: plaintext.
	TLS *TLSConfig
	// RouteCacheSize bounds how many grains the client remembers the
	// hosting silo of (about 140 bytes each, plus the grain's key). A
	// call to a grain the client does not remember goes to a silo
	// hosting the grain's type (with Gateways: to a gateway), which
	// serves it or answers "not here, try silo X"; the client follows
	// that and remembers the silo that answered, so later calls take one
	// hop. An entry is dropped when its silo answers "not here", cannot
	// be dialed, or (with etcd) leaves the membership; beyond the bound,
	// grains not called recently are forgotten first (CLOCK). One-way
	// calls use what is remembered but teach nothing (the silo may have
	// forwarded them). Default DefaultRouteCacheSize (100,000); negative:
	// remember nothing (every call may take two hops).
	RouteCacheSize int
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
	if c.RouteCacheSize == 0 {
		c.RouteCacheSize = DefaultRouteCacheSize
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
//
// A client does not read the grain directory: it sends a call to a silo
// of the membership (or a static gateway) and follows that silo's "not
// here, try silo X" answer, and it remembers, for a bounded number of
// grains (ClientConfig.RouteCacheSize), which silo served them.
type Client struct {
	cfg    ClientConfig
	log    *zap.Logger
	etcd   *clientv3.Client
	view   *cluster.View // nil with static gateways
	tc     *transport.Client
	router *router // with routes, without a directory
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
	c.router = &router{tc: c.tc, routes: newRouteCache(cfg.RouteCacheSize)}
	if len(cfg.Gateways) > 0 {
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
	// Only the membership prefix: it is all a client may be allowed to read.
	members := cluster.MembershipPrefix(prefix)
	vctx, cancel := context.WithTimeout(ctx, cfg.Etcd.DialTimeout)
	defer cancel()
	if _, err := c.etcd.Get(vctx, members, clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
		if vctx.Err() != nil {
			return nil, ecfg.unreachable(ctx, err)
		}
		// etcd answered: the client may not read the membership (its role),
		// or the request itself was refused.
		return nil, fmt.Errorf("runtime: read cluster %q's membership (%s) from etcd at %v: %w",
			cfg.Cluster, members, cfg.Etcd.Endpoints, err)
	}
	if c.view, err = cluster.WatchView(context.WithoutCancel(ctx), c.etcd, prefix, cluster.WithViewLogger(c.log)); err != nil {
		return nil, fmt.Errorf("runtime: membership view: %w", err)
	}
	c.router.view = c.view
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
	var last string // the silo pick chose for the previous attempt
	pick := func() (route, error) {
		rt, err := c.pick(call.Target, last)
		last = rt.silo.SiloID
		return rt, err
	}
	return c.router.invoke(ctx, call, md, pick,
		func() (any, error) {
			return nil, fmt.Errorf("%w: a client hosts no grains", grain.ErrUnknownGrainType)
		})
}

// pick chooses the silo of a call's first attempt: the one that last
// served the grain if the client remembers it and it is still a member,
// else a silo hosting the grain's type (or a static gateway), which
// serves the call or redirects it. It reads no etcd. failed is the silo
// pick chose for an earlier attempt of the call, which had to be routed
// again (its silo could not be dialed, or answered "not here" without
// naming another); "" on the first attempt.
func (c *Client) pick(id grain.ID, failed string) (route, error) {
	if c.view == nil {
		if h, ok := c.router.routes.get(id); ok {
			return route{silo: cluster.SiloInfo{SiloID: h.siloID, Address: h.address}}, nil
		}
		return route{silo: cluster.SiloInfo{Address: c.gateway()}}, nil
	}
	snap := c.view.Current()
	if h, ok := c.router.routes.get(id); ok {
		info, known := snap.Get(h.siloID)
		switch {
		case known && info.Status != cluster.StatusDead && (h.incarnation == 0 || info.Incarnation == h.incarnation):
			return route{silo: info}, nil
		case !known && h.incarnation == 0:
			// Learnt from a redirect to a silo that joined after our view.
			return route{silo: cluster.SiloInfo{SiloID: h.siloID, Address: h.address}}, nil
		}
		c.router.routes.drop(id) // its silo left
	}
	candidates := snap.Hosting(id.Type)
	if len(candidates) == 0 {
		return route{}, fmt.Errorf("%w: no active silo of cluster %q hosts %q (calling %s)",
			grain.ErrUnknownGrainType, c.cfg.Cluster, id.Type, id)
	}
	if failed != "" && len(candidates) > 1 {
		// The view may not know yet that the silo is gone: try another.
		if i, ok := slices.BinarySearchFunc(candidates, failed, func(e cluster.SiloInfo, id string) int {
			return cmp.Compare(e.SiloID, id)
		}); ok {
			j := rand.IntN(len(candidates) - 1)
			if j >= i {
				j++
			}
			return route{silo: candidates[j]}, nil
		}
	}
	// Rendezvous hashing spreads grains over the silos as a random pick
	// would, and when the type is placed by hash (grain.PlaceHash) the
	// silo chosen is the one placement picks, so the call takes one hop.
	return route{silo: rendezvous(id, candidates)}, nil
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
