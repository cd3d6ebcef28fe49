package runtime

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

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
	// membership there (the keys under
	// cluster.MembershipPrefix(ClusterPrefix(Cluster)), and nothing else)
	// to find the silos' gateways, so an etcd user that may only read that
	// prefix is enough; a client never writes etcd. Required unless
	// Gateways is set. A client never starts an embedded etcd.
	Etcd EtcdConfig
	// Gateways is a static list of gateway addresses (silos'
	// GatewayAddress) to send calls to instead of finding them in etcd.
	// A gateway routes each call: it serves it, forwards it, or answers
	// with the gateway address of the silo hosting the grain, which the
	// client calls from then on (it must be able to reach it; see
	// Config.GatewayForward).
	Gateways []string
	// TLS secures the connections to gateways: the client verifies their
	// certificates against TLS.CAFile (or the system roots; TLS.ServerName
	// is the name they must hold, default the host dialed) and presents
	// TLS.CertFile, signed by the clients' CA (the silos'
	// Config.TLS.ClientCAFile), to gateways that require a client
	// certificate. TLS.ClientCAFile must be empty. Default nil: plaintext.
	TLS *TLSConfig
	// TokenSource, if set, gives the bearer token the client presents to
	// gateways (see Config.Authenticator), sent through gRPC per-RPC
	// credentials whenever the client opens a stream to a gateway: at
	// most MaxTokenSize bytes, and only over TLS unless the gateway is on
	// loopback. Default: none.
	TokenSource TokenSource
	// RouteCacheSize bounds how many grains the client remembers the
	// gateway of (about 140 bytes each, plus the grain's key). A call to
	// a grain the client does not remember goes to a gateway chosen round
	// robin, which serves it, forwards it, or answers with the gateway of
	// the silo hosting the grain; the client follows that and remembers
	// the gateway that answered, so later calls take one hop. An entry is
	// dropped when its gateway answers "not here" or cannot be dialed;
	// beyond the bound, grains not called recently are forgotten first
	// (CLOCK). One-way calls use what is remembered but teach nothing.
	// Default DefaultRouteCacheSize (100,000); negative: remember nothing
	// (every call may take two hops).
	RouteCacheSize int
	// ResponseTimeout is the deadline of calls whose context has none.
	// Default 30s.
	ResponseTimeout time.Duration
	// MaxMessageSize is the largest msgpack encoding of the arguments, or
	// of the reply, of one call (see Config.MaxMessageSize): a call whose
	// arguments are larger fails before it is sent, one whose reply is
	// larger fails once it ran (ran and failed), both with an error
	// wrapping grain.ErrTooLarge. The gateway enforces its silo's limit
	// too. Default DefaultMaxMessageSize (4 MiB).
	MaxMessageSize int
	// OutgoingFilters see every call the client makes, in order, before
	// it is routed; see grain.Filter.
	OutgoingFilters []grain.Filter
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
	for _, gw := range c.Gateways {
		if !validAddress(gw) {
			return fmt.Errorf("runtime: client config: gateway address %q is not host:port", gw)
		}
	}
	if c.ResponseTimeout <= 0 {
		c.ResponseTimeout = DefaultResponseTimeout
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.MaxMessageSize < 0 {
		return fmt.Errorf("runtime: client config: max message size %d is negative", c.MaxMessageSize)
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
	router *router // without directory: calls go to gateways
	picker *gatewayPicker
	closed atomic.Bool
	// Observers this client made (observer.go).
	obs     *clientObservers
	obsOnce sync.Once
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
	tcfg := transport.ClientConfig{Logger: c.log, Credentials: creds, OnPush: c.onPush, Limits: TransportConfig{}.limits(cfg.MaxMessageSize)}
	if cfg.TokenSource != nil {
		tcfg.DialOptions = append(tcfg.DialOptions, grpc.WithPerRPCCredentials(tokenCredentials{src: cfg.TokenSource}))
	}
	if c.tc, err = transport.NewClient(tcfg); err != nil {
		return nil, fmt.Errorf("runtime: client transport: %w", err)
	}
	c.picker = &gatewayPicker{static: cfg.Gateways}
	c.router = &router{tc: c.tc, routes: directory.NewCache(cfg.RouteCacheSize), maxMessage: cfg.MaxMessageSize}
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
	c.picker.view = c.view
	return c, nil
}

// View returns the client's membership view (nil with static gateways).
func (c *Client) View() *cluster.View { return c.view }

// Invoke implements grain.Caller. The call passes through
// ClientConfig.OutgoingFilters first.
func (c *Client) Invoke(ctx context.Context, call *grain.Call) (any, error) {
	if len(c.cfg.OutgoingFilters) == 0 || call.Method == nil {
		return c.invoke(ctx, call)
	}
	return grain.RunFilters(ctx, c.cfg.OutgoingFilters, &grain.CallInfo{Target: call.Target, Method: call.Method, Args: call.Args},
		func(ctx context.Context) (any, error) { return c.invoke(ctx, call) })
}

func (c *Client) invoke(ctx context.Context, call *grain.Call) (any, error) {
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
	if err := checkRequestValues(ctx, call, md); err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok && !md.Flags.Has(grain.OneWay) {
		// No timer per call: the transport enforces the deadline.
		var release func()
		ctx, release = transport.WithTimeout(ctx, c.cfg.ResponseTimeout)
		defer release()
	}
	pick := func() (route, error) { return clientRoute(c.router.routes, c.picker, call.Target) }
	return c.router.invoke(ctx, call, md, pick, func() (any, error) {
		return nil, fmt.Errorf("%w: a client hosts no grains", grain.ErrUnknownGrainType)
	})
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
	c.closeObservers()
	if c.view != nil {
		errs = append(errs, c.view.Close())
	}
	if c.etcd != nil {
		errs = append(errs, c.etcd.Close())
	}
	return errors.Join(errs...)
}
