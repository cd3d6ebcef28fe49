package runtime

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/granary-rt/granary/directory"
	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/reminder"
	"github.com/granary-rt/granary/runtime/storage"
)

// Defaults applied by Config validation.
const (
	DefaultCluster         = "dev"
	DefaultCollectionAge   = 15 * time.Minute
	DefaultMailboxLimit    = 1000
	DefaultResponseTimeout = 30 * time.Second
	DefaultLeaseTTL        = 10 * time.Second
	DefaultDialTimeout     = 5 * time.Second
	DefaultMaxRouting      = 1024
	// DefaultMaxMessageSize is the message size limit (Config and
	// ClientConfig.MaxMessageSize) when none is set: 4 MiB.
	DefaultMaxMessageSize = 4 << 20
	// DefaultRouteCacheSize is how many grains a client remembers the
	// gateway of when ClientConfig.RouteCacheSize is 0.
	DefaultRouteCacheSize = 100_000
	// DefaultStorage is the name of the storage provider states use unless
	// they select another with grain.WithStorage.
	DefaultStorage = "default"
)

// Config configures a silo. The zero value is a working development silo:
// cluster "dev", an embedded etcd in a temporary directory, state stored in
// that etcd.
type Config struct {
	// Cluster names the cluster; silos and clients of one cluster share
	// the etcd key prefix /granary/<cluster>/. Default "dev".
	Cluster string
	// SiloID identifies this silo in the cluster. Default: generated,
	// unique per process start.
	SiloID string
	// Etcd says where the cluster's etcd is. With no endpoints the silo
	// starts an embedded etcd (development default).
	Etcd EtcdConfig
	// ListenAddress is where the silo accepts gRPC connections from other
	// silos. Default "127.0.0.1:0" (a free loopback port). Clients connect
	// to GatewayListenAddress.
	ListenAddress string
	// AdvertiseAddress is the address other silos dial.
	// Default: the address the listener got.
	AdvertiseAddress string
	// TLS secures the silo's listeners and its connections to other
	// silos: the silo presents CertFile to clients and silos, requires
	// and verifies other silos' certificates against CAFile on the silo
	// listener (mutual TLS with the cluster's CA), and verifies clients'
	// certificates against ClientCAFile on the gateway as TLS.ClientAuth
	// says.
	// Default nil: plaintext, for development on loopback; a silo
	// listening on another address without TLS logs a warning.
	TLS *TLSConfig
	// GatewayListenAddress is where the silo accepts connections from
	// clients (runtime.Connect): its gateway, a listener of its own, on
	// which a client may call grain methods and nothing else (see
	// GatewayStats). Default "127.0.0.1:0" (a free loopback port).
	GatewayListenAddress string
	// GatewayAdvertiseAddress is the address clients dial to reach the
	// gateway, published in the silo's membership record. Default: the
	// address the gateway listener got.
	GatewayAdvertiseAddress string
	// Authenticator, if set, authenticates every client stream on the
	// gateway (StaticTokens, CertificateSubjects, or your own); clients
	// it refuses get grain.ErrUnauthenticated, and grain code sees the
	// identity it returns through grain.CallerIdentity. Default: none,
	// every client is taken anonymously (a silo whose gateway listens
	// beyond loopback without one logs a warning).
	Authenticator Authenticator
	// GatewayForward makes the gateway forward a client's call for a grain
	// active on another silo to that silo, instead of answering with that
	// silo's gateway address for the client to call next: for clients
	// that can reach only some gateways (behind a load balancer). A
	// gateway that does not host a grain's type, whose call a hosting silo
	// placed elsewhere, forwards it there too. It costs a hop on every
	// such call. Default false.
	GatewayForward bool
	// Storage maps provider names to providers. States use the provider
	// named DefaultStorage unless they select another. Default: an etcd
	// provider on the cluster's etcd, for small states.
	Storage map[string]storage.Provider
	// Reminders is the table durable reminders are stored in. Default: an
	// etcd table on the cluster's etcd (runtime/reminder.NewEtcd); use
	// runtime/storage/postgres.NewReminderTable for PostgreSQL.
	Reminders reminder.Table
	// ReminderMinPeriod is the shortest reminder period accepted. Default
	// 1s; tests may lower it.
	ReminderMinPeriod time.Duration
	// ReminderProgressInterval is how often a silo records which reminder
	// ticks it delivered; a silo taking over a crashed silo's reminders
	// fires the ticks due since then. Default 1s.
	ReminderProgressInterval time.Duration
	// ReminderRefreshInterval is how often a silo reloads the reminders it
	// owns from the table, which picks up changes whose notice was lost.
	// A silo records progress only up to its last reload, so this also
	// bounds how many ticks a silo taking over a crashed silo's reminders
	// may deliver again. Default 1 minute.
	ReminderRefreshInterval time.Duration
	// LeaseTTL is the silo's etcd lease TTL: how long after a crash its
	// grains may be activated elsewhere. Default 10s. Stop returns within
	// DeactivationTimeout + LeaseTTL (see Silo.Stop).
	LeaseTTL time.Duration
	// CollectionAge is the default idle time after which an activation is
	// deactivated; grain types override it with grain.WithCollectionAge.
	// Default 15 minutes.
	CollectionAge time.Duration
	// CollectionQuantum is how often the idle collector scans. Default: a
	// quarter of the smallest collection age of the registered types,
	// between 1ms and 1 minute.
	CollectionQuantum time.Duration
	// MailboxLimit is the default bound on calls waiting for one
	// activation; types override it with grain.WithMailboxLimit. Default
	// 1000.
	MailboxLimit int
	// ResponseTimeout is the deadline of calls whose context has none.
	// Default 30s.
	ResponseTimeout time.Duration
	// MaxMessageSize is the largest msgpack encoding of the arguments, or
	// of the reply, of one call, in-process and remote alike: a call whose
	// arguments are larger fails before it runs, one whose reply is larger
	// fails after it ran (ran and failed), both with an error wrapping
	// grain.ErrTooLarge that names the grain and method. The silo checks
	// it on the calls it makes (from its in-process client and its grains)
	// and on the requests and replies it receives; a peer with a larger
	// limit may be refused by one with a smaller one. In-process calls of
	// grain.CopyFree methods are not encoded: their size is bounded from
	// their type and the lengths of their strings, and encoded only when
	// that bound is over the limit. Default DefaultMaxMessageSize (4 MiB).
	MaxMessageSize int
	// DeactivationTimeout bounds one deactivation (OnDeactivate plus state
	// writes), and all of them together when the silo stops: Stop returns
	// within DeactivationTimeout + LeaseTTL whatever etcd and storage do,
	// dropping (and logging) what it could not write. Default 30s.
	DeactivationTimeout time.Duration
	// Transport tunes the silo's listeners: frame and header limits,
	// requests in flight per stream (default 4096) and per connection
	// (8192), streams per connection (16), the spare reply queue of a
	// stream (1024). Zero fields take the defaults. Its
	// MaxRequestTimeout is at most ResponseTimeout: a remote caller
	// cannot make the silo hold its request longer.
	Transport TransportConfig
	// MaxRouting caps the requests from other processes that wait for a
	// directory lookup (grains not active here), each on its own
	// goroutine; beyond it such requests are answered at once with
	// grain.ErrOverloaded. It also caps activations being created
	// (directory registration, state load, OnActivate) and one-way calls
	// being re-routed. Default 1024.
	MaxRouting int
	// IncomingFilters see every call to a grain hosted by this silo, in
	// order, before the type's own (grain.WithIncomingFilters), inside the
	// call's turn; see grain.Filter. Reminder ticks pass through them
	// (method grain.ReminderMethod); timer callbacks do not.
	IncomingFilters []grain.Filter
	// OutgoingFilters see every call made through this silo (by its
	// grains, or through Silo.Client), in order, before it is routed; see
	// grain.Filter.
	OutgoingFilters []grain.Filter
	// Logger receives the silo's logs. Default: no logs.
	Logger *zap.Logger

	// directory overrides the grain directory (a test hook, set through
	// export_test.go). Default: the etcd directory, entries bound to this
	// silo's lease.
	directory directory.Directory
	// grpcOptions are added to the gRPC options of both listeners (a test
	// hook, set through export_test.go).
	grpcOptions []grpc.ServerOption
}

// EtcdConfig says how to reach etcd.
type EtcdConfig struct {
	// Endpoints of an external etcd cluster. Empty: start an embedded etcd.
	// When endpoints are given and unreachable, Start fails; it never
	// falls back to an embedded etcd.
	Endpoints []string
	// DialTimeout bounds connecting to etcd. Default 5s.
	DialTimeout time.Duration
	// Username and Password, if the etcd cluster has auth enabled.
	Username, Password string
	// TLS secures the connections to etcd: the client verifies etcd's
	// certificate against TLS.CAFile (or the system roots) and presents
	// TLS.CertFile if etcd asks for client certificates. Endpoints are
	// then https:// URLs or host:port. Default nil: plaintext (http://).
	TLS *TLSConfig
}

// validate checks the etcd configuration of field ("Config.Etcd", ...).
func (e *EtcdConfig) validate(field string) error {
	if e.DialTimeout == 0 {
		e.DialTimeout = DefaultDialTimeout
	}
	if err := e.TLS.validate(field+".TLS", false); err != nil {
		return err
	}
	if e.TLS == nil {
		return nil
	}
	if len(e.Endpoints) == 0 {
		return fmt.Errorf("%s.TLS is set without endpoints: the embedded etcd serves plaintext on loopback; give the endpoints of a TLS etcd", field)
	}
	for _, ep := range e.Endpoints {
		if strings.HasPrefix(ep, "http://") || strings.HasPrefix(ep, "unix://") {
			return fmt.Errorf("%s: endpoint %q is plaintext but %s.TLS is set: use https://", field, ep, field)
		}
	}
	return nil
}

func (c *Config) validate() error {
	if c.Cluster == "" {
		c.Cluster = DefaultCluster
	}
	for _, r := range c.Cluster {
		if r == '/' || r < ' ' {
			return fmt.Errorf("runtime: cluster name %q must not contain '/' or control characters", c.Cluster)
		}
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.LeaseTTL < time.Second {
		return fmt.Errorf("runtime: lease TTL %v is below etcd's minimum of 1s", c.LeaseTTL)
	}
	if c.CollectionAge == 0 {
		c.CollectionAge = DefaultCollectionAge
	}
	if c.MailboxLimit == 0 {
		c.MailboxLimit = DefaultMailboxLimit
	}
	if c.ReminderMinPeriod == 0 {
		c.ReminderMinPeriod = time.Second
	}
	if c.ReminderProgressInterval == 0 {
		c.ReminderProgressInterval = time.Second
	}
	if c.ReminderRefreshInterval == 0 {
		c.ReminderRefreshInterval = time.Minute
	}
	if c.ResponseTimeout == 0 {
		c.ResponseTimeout = DefaultResponseTimeout
	}
	if c.DeactivationTimeout == 0 {
		c.DeactivationTimeout = 30 * time.Second
	}
	if c.MaxRouting == 0 {
		c.MaxRouting = DefaultMaxRouting
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.ListenAddress == "" {
		c.ListenAddress = "127.0.0.1:0"
	}
	if c.GatewayListenAddress == "" {
		c.GatewayListenAddress = "127.0.0.1:0"
	}
	if c.Etcd.DialTimeout == 0 {
		c.Etcd.DialTimeout = DefaultDialTimeout
	}
	var errs []error
	if err := c.Etcd.validate("Config.Etcd"); err != nil {
		errs = append(errs, err)
	}
	if err := c.TLS.validate("Config.TLS", true); err != nil {
		errs = append(errs, err)
	}
	if c.CollectionAge < 0 {
		errs = append(errs, fmt.Errorf("collection age %v is negative", c.CollectionAge))
	}
	if c.CollectionQuantum < 0 {
		errs = append(errs, fmt.Errorf("collection quantum %v is negative", c.CollectionQuantum))
	}
	if c.MailboxLimit < 0 {
		errs = append(errs, fmt.Errorf("mailbox limit %d is negative", c.MailboxLimit))
	}
	if c.ResponseTimeout < 0 {
		errs = append(errs, fmt.Errorf("response timeout %v is negative", c.ResponseTimeout))
	}
	if c.MaxRouting < 0 {
		errs = append(errs, fmt.Errorf("max routing %d is negative", c.MaxRouting))
	}
	if c.MaxMessageSize < 0 {
		errs = append(errs, fmt.Errorf("max message size %d is negative", c.MaxMessageSize))
	}
	if c.GatewayAdvertiseAddress != "" && !validAddress(c.GatewayAdvertiseAddress) {
		errs = append(errs, fmt.Errorf("gateway advertise address %q is not host:port", c.GatewayAdvertiseAddress))
	}
	if gw := c.GatewayAdvertiseAddress; gw != "" && (gw == c.AdvertiseAddress || gw == c.ListenAddress) {
		// Clients would be sent to the silo listener, where a peer may
		// send what only silos send.
		errs = append(errs, fmt.Errorf("gateway advertise address %q is the silo listener's address: clients must reach the gateway, never the silo listener", gw))
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("runtime: invalid config: %w", err)
	}
	return nil
}

func (c *Config) prefix() string { return ClusterPrefix(c.Cluster) }

// ClusterPrefix returns the etcd key prefix of cluster, "/granary/<cluster>/",
// under which its silos keep their membership, grain directory, state and
// reminders. An empty cluster means DefaultCluster, as in Config. It is for
// tools and tests that open a cluster's tables directly on the same etcd,
// for example reminder.NewEtcd or directory.NewEtcd:
//
//	table, err := reminder.NewEtcd(cli, reminder.EtcdConfig{Prefix: runtime.ClusterPrefix("prod")})
//
// It does not check the name; Config rejects names containing '/' or
// control characters.
func ClusterPrefix(cluster string) string {
	if cluster == "" {
		cluster = DefaultCluster
	}
	return "/granary/" + cluster + "/"
}
