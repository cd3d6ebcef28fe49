package runtime

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/granary-rt/granary/directory"
	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/cluster"
	"github.com/granary-rt/granary/runtime/etcdembed"
	"github.com/granary-rt/granary/runtime/internal/transport"
	"github.com/granary-rt/granary/runtime/reminder"
	"github.com/granary-rt/granary/runtime/storage"
	"github.com/granary-rt/granary/runtime/storage/etcdstore"
)

// Silo hosts grain activations. Create it with NewSilo, register grain types
// with the generated RegisterXxx functions, then Start it:
//
//	silo, err := runtime.NewSilo(runtime.Config{})
//	bank.RegisterAccount(silo, newAccount)
//	err = silo.Start(ctx)
//	defer silo.Stop(ctx)
//	acct := bank.NewAccountRef(silo.Client(), "alice")
//
// A Silo is safe for concurrent use.
type Silo struct {
	cfg  Config
	id   string
	addr string
	log  *zap.Logger

	types  map[string]*grainType
	regErr []error

	table   *table
	dir     directory.Directory
	storage map[string]storage.Provider
	quantum time.Duration
	epoch   time.Time

	etcd     *clientv3.Client
	embedded *etcdembed.Server
	// inc is the silo's current incarnation; a fenced silo rejoins with a
	// new one.
	inc    atomic.Pointer[incarnation]
	view   *cluster.View
	lis    net.Listener
	server *transport.Server
	tc     *transport.Client
	// Observers this silo delivers calls to (observer.go).
	obs     *observerTable
	obsOnce sync.Once
	// The gateway listener, for clients (gateway.go).
	gwAddr     string
	gwLis      net.Listener
	gwServer   *transport.Server
	gwStats    gatewayCounters
	gwRefusals badRequestLog
	// tlsRefusals rate-limits the log of peers the silo listener's TLS
	// handshake refused (tls.go).
	tlsRefusals badRequestLog

	nextActivation atomic.Uint64
	// droppedUnwritten counts activations dropped with state that could
	// not be written (see DroppedUnwritten).
	droppedUnwritten atomic.Int64
	// Owned by the collector goroutine: the last load published and when.
	loadSent, loadAt int64
	started          atomic.Bool
	serving          atomic.Bool // between a successful Start and Stop
	stopping         atomic.Bool
	// admit orders the creation of activations before Stop: dispatch
	// read-locks it to check stopping and create; stop write-locks it to
	// set stopping, so no activation appears after Stop looked.
	admit sync.RWMutex
	// life serialises Start and Stop.
	life   sync.Mutex
	stopCh chan struct{} // closed when Stop begins
	// remindersStop is closed when Stop has deactivated the grains: the
	// reminder service fires until then.
	remindersStop chan struct{}

	reminders *reminderService

	// badRequests rate-limits the log of malformed requests per peer.
	badRequests badRequestLog

	// retries holds when activations kept after a failed deactivation
	// write are due to be tried again (monotonic nanotime): the collector
	// wakes for them instead of waiting for its next pass.
	retryMu   sync.Mutex
	retries   []int64 // a min-heap
	retryWake chan struct{}

	turnWork chan *activation // unbuffered: hands an activation to an idle turn worker
	// routing holds a token per request from another process that waits
	// for a directory lookup or for its grain's activation, and per one-way
	// call being re-routed: Config.MaxRouting of them at most.
	routing   chan struct{}
	dropLogAt atomic.Int64 // nanotime of the last "dropped" warning
	// deadlockLogAt is the nanotime of the last ErrDeadlock warning.
	deadlockLogAt atomic.Int64
	idleWorkers   atomic.Int32
	leaseDone     chan struct{} // closed when the lease watcher may exit
	stopCtx       context.Context
	stopErr       error
	stopped       bool
	wg            sync.WaitGroup
}

type grainType struct {
	desc          *grain.TypeDesc
	factory       grain.Factory
	collectionAge time.Duration
	mailboxLimit  int
	placement     grain.Placement
	// reentrant, callChainReentrant: see grain.Reentrant and
	// grain.WithCallChainReentrancy.
	reentrant          bool
	callChainReentrant bool
	// incoming are the silo's incoming filters followed by the type's.
	incoming []grain.Filter
	workers  int // a stateless worker's most activations per grain id; 0: not one
}

// NewSilo validates cfg and returns a silo that is not started yet.
func NewSilo(cfg Config) (*Silo, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Silo{
		cfg:           cfg,
		log:           cfg.Logger,
		types:         make(map[string]*grainType),
		table:         newTable(),
		epoch:         time.Now(),
		stopCh:        make(chan struct{}),
		remindersStop: make(chan struct{}),
		retryWake:     make(chan struct{}, 1),
		turnWork:      make(chan *activation),
		routing:       make(chan struct{}, cfg.MaxRouting),
		leaseDone:     make(chan struct{}),
		stopCtx:       context.Background(),
	}, nil
}

// RegisterGrainType implements grain.Registry; generated RegisterXxx
// functions call it. Register every type before Start. Registration errors
// (a duplicate type, a registration after Start) are reported by Start.
func (s *Silo) RegisterGrainType(t *grain.TypeDesc, f grain.Factory, opts ...grain.TypeOption) {
	switch {
	case s.started.Load():
		s.regErr = append(s.regErr, fmt.Errorf("grain type %q registered after Start", t.Name))
		return
	case t == nil || t.Name == "" || f == nil:
		s.regErr = append(s.regErr, errors.New("grain type registered without a name or factory"))
		return
	case s.types[t.Name] != nil:
		s.regErr = append(s.regErr, fmt.Errorf("grain type %q registered twice", t.Name))
		return
	}
	tc := grain.NewTypeConfig(opts...)
	gt := &grainType{desc: t, factory: f, collectionAge: tc.CollectionAge, mailboxLimit: tc.MailboxLimit,
		placement: tc.Placement, reentrant: tc.Reentrant, callChainReentrant: tc.CallChainReentrancy,
		incoming: slices.Concat(s.cfg.IncomingFilters, tc.IncomingFilters)}
	if gt.collectionAge <= 0 {
		gt.collectionAge = s.cfg.CollectionAge
	}
	if gt.mailboxLimit <= 0 {
		gt.mailboxLimit = s.cfg.MailboxLimit
	}
	if err := configureStateless(gt, tc); err != nil {
		s.regErr = append(s.regErr, err)
		return
	}
	s.types[t.Name] = gt
}

// ID returns the silo's id in the cluster (valid after Start).
func (s *Silo) ID() string { return s.id }

// Address returns the address other silos dial to reach this silo (valid
// after Start). Clients dial GatewayAddress.
func (s *Silo) Address() string { return s.addr }

// Client returns a grain.Caller for code running in the silo's process
// that is not itself a grain: HTTP handlers, jobs, tests.
func (s *Silo) Client() grain.Caller { return s }

// Start connects to etcd (starting an embedded one if no endpoints are
// configured), joins the cluster and starts serving calls.
func (s *Silo) Start(ctx context.Context) (err error) {
	s.life.Lock()
	defer s.life.Unlock()
	if s.stopped {
		return errors.New("runtime: silo already stopped")
	}
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("runtime: silo already started")
	}
	if err := errors.Join(s.regErr...); err != nil {
		return fmt.Errorf("runtime: grain registration: %w", err)
	}
	defer func() {
		if err != nil {
			s.closeBackends()
		}
	}()
	creds, err := s.cfg.TLS.siloCredentials(s.cfg.Logger)
	if err != nil {
		return err
	}
	if err := s.connectEtcd(ctx); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", s.cfg.ListenAddress)
	if err != nil {
		return fmt.Errorf("runtime: listen on %s: %w", s.cfg.ListenAddress, err)
	}
	s.lis = lis
	if s.cfg.TLS == nil && !isLoopback(lis.Addr().String()) {
		s.cfg.Logger.Warn("runtime: SILO LISTENS WITHOUT TLS ON A NON-LOOPBACK ADDRESS: anyone who can reach it can call "+
			"any grain and forge internal requests; set Config.TLS (flags -tls-cert, -tls-key, -tls-ca)",
			zap.String("listen", lis.Addr().String()))
	}
	s.addr = s.cfg.AdvertiseAddress
	if s.addr == "" {
		s.addr = lis.Addr().String()
	}
	gwLis, err := net.Listen("tcp", s.cfg.GatewayListenAddress)
	if err != nil {
		return fmt.Errorf("runtime: gateway: listen on %s: %w", s.cfg.GatewayListenAddress, err)
	}
	s.gwLis = gwLis
	s.gwAddr = s.cfg.GatewayAdvertiseAddress
	if s.gwAddr == "" {
		s.gwAddr = gwLis.Addr().String()
	}
	names := make([]string, 0, len(s.types))
	var stateless []string
	for n, t := range s.types {
		names = append(names, n)
		if t.workers > 0 {
			stateless = append(stateless, n)
		}
	}
	member, err := cluster.Join(ctx, s.etcd, cluster.Config{
		Prefix:         s.cfg.prefix(),
		SiloID:         s.cfg.SiloID,
		Address:        s.addr,
		GatewayAddress: s.gwAddr,
		GrainTypes:     names,
		StatelessTypes: stateless,
		TTL:            s.cfg.LeaseTTL,
		Logger:         s.cfg.Logger,
	})
	if err != nil {
		return fmt.Errorf("runtime: join cluster %q: %w", s.cfg.Cluster, err)
	}
	s.id = member.Info().SiloID
	s.log = s.cfg.Logger.With(zap.String("silo", s.id))
	inc, err := s.newIncarnation(member)
	if err != nil {
		member.Close()
		return err
	}
	s.inc.Store(inc)
	s.storage = make(map[string]storage.Provider, len(s.cfg.Storage)+1)
	for n, p := range s.cfg.Storage {
		s.storage[n] = p
	}
	if s.storage[DefaultStorage] == nil {
		p, err := etcdstore.New(s.etcd, etcdstore.Config{Prefix: s.cfg.prefix(), Logger: s.log})
		if err != nil {
			return fmt.Errorf("runtime: default storage: %w", err)
		}
		s.storage[DefaultStorage] = p
	}
	s.quantum = s.collectionQuantum()

	s.view, err = cluster.WatchView(context.WithoutCancel(ctx), s.etcd, s.cfg.prefix(), cluster.WithViewLogger(s.log))
	if err != nil {
		return fmt.Errorf("runtime: membership view: %w", err)
	}
	s.tc, err = transport.NewClient(transport.ClientConfig{Logger: s.log, Credentials: creds.dial,
		Limits: s.cfg.Transport.limits(s.cfg.MaxMessageSize)})
	if err != nil {
		return fmt.Errorf("runtime: transport client: %w", err)
	}
	inc.router = &router{self: s.id, dir: inc.dir, view: s.view, tc: s.tc, localLoad: s.table.len, maxMessage: s.cfg.MaxMessageSize}
	table := s.cfg.Reminders
	if table == nil {
		if table, err = reminder.NewEtcd(s.etcd, reminder.EtcdConfig{Prefix: s.cfg.prefix(), Logger: s.log}); err != nil {
			return fmt.Errorf("runtime: reminder table: %w", err)
		}
	}
	s.reminders = newReminderService(s, table)
	tcfg := s.cfg.Transport.serverConfig(s.cfg.MaxMessageSize)
	tcfg.Logger = s.log
	tcfg.GRPCOptions = s.cfg.grpcOptions
	// The silo listener takes silos only: their certificates are always
	// required (mutual TLS). The gateway takes clients as ClientAuth says.
	tcfg.Credentials = s.logRefusedPeers(creds.silo)
	if tcfg.MaxRequestTimeout <= 0 || tcfg.MaxRequestTimeout > s.cfg.ResponseTimeout {
		tcfg.MaxRequestTimeout = s.cfg.ResponseTimeout
	}
	s.server, err = transport.NewServer(tcfg, transport.HandlerFunc(s.handleRequest))
	if err != nil {
		return fmt.Errorf("runtime: transport server: %w", err)
	}
	if s.gwServer, err = transport.NewServer(s.gatewayServerConfig(tcfg, creds.gateway), transport.HandlerFunc(s.handleGatewayRequest)); err != nil {
		return fmt.Errorf("runtime: gateway server: %w", err)
	}
	s.wg.Add(4)
	go func() {
		defer s.wg.Done()
		if err := s.server.Serve(lis); err != nil {
			s.log.Error("transport server failed", zap.Error(err))
		}
	}()
	go func() {
		defer s.wg.Done()
		if err := s.gwServer.Serve(gwLis); err != nil {
			s.log.Error("gateway server failed", zap.Error(err))
		}
	}()
	go s.collectLoop()
	go s.watchLease()
	s.serving.Store(true)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.reminders.run(s.remindersStop)
	}()
	s.log.Info("silo started", zap.String("cluster", s.cfg.Cluster), zap.Int("grain_types", len(s.types)),
		zap.String("address", s.addr), zap.String("gateway", s.gwAddr), zap.Bool("authenticated", s.cfg.Authenticator != nil),
		zap.Duration("collection_quantum", s.quantum))
	s.warnOpenGateway()
	return nil
}

// connectEtcd connects to the configured etcd, or starts an embedded one.
// Configured endpoints that do not answer within the dial timeout are an
// error: there is no fallback to the embedded etcd.
func (s *Silo) connectEtcd(ctx context.Context) error {
	endpoints := s.cfg.Etcd.Endpoints
	if len(endpoints) == 0 {
		srv, err := etcdembed.Start(ctx, etcdembed.Config{Logger: s.cfg.Logger.Named("etcd")})
		if err != nil {
			return fmt.Errorf("runtime: embedded etcd: %w", err)
		}
		s.embedded, endpoints = srv, srv.Endpoints()
		s.cfg.Logger.Info("started embedded etcd (no endpoints configured)", zap.Strings("endpoints", endpoints))
	}
	ecfg, err := etcdClientConfig(s.cfg.Etcd, endpoints, "Config.Etcd", s.cfg.Logger)
	if err != nil {
		return err
	}
	cli, err := clientv3.New(ecfg.cfg)
	if err != nil {
		return fmt.Errorf("runtime: etcd client for %v: %w", endpoints, err)
	}
	s.etcd = cli
	pctx, cancel := context.WithTimeout(ctx, s.cfg.Etcd.DialTimeout)
	defer cancel()
	if _, err := cli.Get(pctx, s.cfg.prefix()+"ping", clientv3.WithCountOnly()); err != nil {
		return ecfg.unreachable(ctx, err)
	}
	return nil
}

func (s *Silo) collectionQuantum() time.Duration {
	if s.cfg.CollectionQuantum > 0 {
		return s.cfg.CollectionQuantum
	}
	age := s.cfg.CollectionAge
	for _, t := range s.types {
		age = min(age, t.collectionAge)
	}
	return min(max(age/4, time.Millisecond), time.Minute)
}

// Stop deactivates every activation (running OnDeactivate and writing
// changed state), leaves the cluster and releases everything the silo
// started. Calls that arrive meanwhile fail with grain.ErrSiloUnavailable.
//
// Stop returns within DeactivationTimeout + LeaseTTL of being called,
// whatever etcd and the storage providers do, and sooner if ctx ends:
// Stop(context.Background()) is safe. Announcing ShuttingDown may take up
// to LeaseTTL/4; deactivations (OnDeactivate and state writes, retried
// with backoff) DeactivationTimeout after that; draining the transport,
// handing reminders over and leaving the cluster share what is left,
// leaving keeping at least LeaseTTL/4. Activations whose state is not
// written by then are dropped: each is logged as an error naming the grain
// (the first hundred; then a count), counted by DroppedUnwritten, and
// Stop's error says how many. If etcd cannot be reached to leave, the
// silo's registration and directory entries end with its lease.
func (s *Silo) Stop(ctx context.Context) error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.stopped {
		return s.stopErr
	}
	s.stopped = true
	s.admit.Lock()
	s.stopping.Store(true)
	s.admit.Unlock()
	if !s.serving.Load() {
		// Never started, or Start failed and released everything.
		return nil
	}
	s.stopErr = s.stop(ctx)
	return s.stopErr
}

func (s *Silo) stop(ctx context.Context) error {
	// The phases' deadlines; see Stop.
	reserve := s.cfg.LeaseTTL / 4
	stopCtx, cancelStop := context.WithTimeout(ctx, s.cfg.DeactivationTimeout+s.cfg.LeaseTTL)
	defer cancelStop()
	end, _ := stopCtx.Deadline()
	inc := s.inc.Load()
	if !inc.member.Fenced() {
		actx, cancel := context.WithTimeout(stopCtx, reserve)
		if err := inc.member.SetStatus(actx, cluster.StatusShuttingDown); err != nil {
			s.log.Warn("could not announce shutdown; deactivating anyway", zap.Error(err))
		}
		cancel()
	}
	dctx, cancelDeact := context.WithTimeout(stopCtx, s.cfg.DeactivationTimeout)
	defer cancelDeact()
	s.stopCtx = dctx
	close(s.stopCh)
	var errs []error
	if n := s.deactivateAll(dctx); n > 0 {
		errs = append(errs, fmt.Errorf("runtime: stop: %d activations dropped without writing state: %w", n, dctx.Err()))
	}
	// Calls that still arrive are answered "not here" until the server
	// has drained; leave keeps time of its own.
	drainCtx, cancelDrain := context.WithDeadline(stopCtx, end.Add(-reserve))
	defer cancelDrain()
	gwStopped := make(chan error, 1)
	go func() { gwStopped <- s.gwServer.Stop(drainCtx) }()
	if err := s.server.Stop(drainCtx); err != nil {
		errs = append(errs, fmt.Errorf("runtime: stop transport server: %w", err))
	}
	if err := <-gwStopped; err != nil {
		errs = append(errs, fmt.Errorf("runtime: stop gateway server: %w", err))
	}
	// The reminder service keeps its buckets while this silo is shutting
	// down (its ticks go to grains on other silos now); it hands them
	// over when this silo leaves, its last ticks delivered and its
	// progress recorded.
	close(s.remindersStop)
	select {
	case <-s.reminders.done:
	case <-drainCtx.Done():
		s.log.Warn("stop: the reminder service did not hand its buckets over in time; the silo that takes them over delivers again the ticks due since their last recorded progress")
	}
	s.reminders.cancel() // cuts short what it still does
	close(s.leaseDone)
	if err := waitGroup(drainCtx, &s.wg); err != nil {
		errs = append(errs, fmt.Errorf("runtime: stop: grain turns still running: %w", err))
	}
	if inc := s.inc.Load(); inc != nil {
		if err := inc.member.Leave(stopCtx); err != nil {
			s.log.Error("could not leave the cluster; the silo's registration and directory entries end with its lease",
				zap.Duration("lease_ttl", inc.member.TTL()), zap.Error(err))
			errs = append(errs, fmt.Errorf("runtime: leave cluster: %w", err))
		}
		inc.cancel()
	}
	s.closeBackends()
	s.serving.Store(false)
	s.log.Info("silo stopped")
	return errors.Join(errs...)
}

// closeBackends releases what Start created, in reverse order.
func (s *Silo) closeBackends() {
	if s.server != nil && !s.serving.Load() {
		_ = s.server.Stop(context.Background())
	}
	if s.gwServer != nil && !s.serving.Load() {
		_ = s.gwServer.Stop(context.Background())
	}
	if s.lis != nil {
		_ = s.lis.Close()
	}
	if s.gwLis != nil {
		_ = s.gwLis.Close()
	}
	if s.tc != nil {
		_ = s.tc.Close()
	}
	if s.view != nil {
		_ = s.view.Close()
	}
	if inc := s.inc.Load(); inc != nil {
		inc.member.Close()
		if c, ok := inc.dir.(interface{ Close() error }); ok && s.cfg.directory == nil {
			_ = c.Close()
		}
	}
	if s.etcd != nil {
		_ = s.etcd.Close()
	}
	if s.embedded != nil {
		if err := s.embedded.Close(); err != nil {
			s.log.Warn("closing embedded etcd", zap.Error(err))
		}
	}
}

// deactivateAll deactivates every activation, waiting for busy ones to drain
// their mailboxes. It returns how many it had to drop when ctx ended.
func (s *Silo) deactivateAll(ctx context.Context) int {
	sem := make(chan struct{}, 64)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		acts := s.table.snapshot()
		if len(acts) == 0 {
			return 0
		}
		for _, a := range acts {
			if !a.tryDeactivate(s.nanotime(), 0) {
				// Busy or still activating: deactivate when it drains.
				a.mu.Lock()
				a.deactivate = grain.DeactivateSiloStopping
				a.mu.Unlock()
				continue
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				// Not started: put it back so dropAll fails its calls.
				a.mu.Lock()
				a.status, a.running = statusValid, false
				a.mu.Unlock()
				return s.dropUnwritten(ctx)
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() { <-sem }()
				a.deactivateNow(ctx, grain.DeactivateSiloStopping)
			}()
		}
		select {
		case <-ctx.Done():
			return s.dropUnwritten(ctx)
		case <-tick.C:
		}
	}
}

// dropUnwritten drops, at the end of Stop's deactivation phase (ctx), the
// activations still there, saying which.
func (s *Silo) dropUnwritten(ctx context.Context) int {
	for _, a := range s.table.snapshot() {
		a.lost("stop's deactivation time ran out before its state was written", context.Cause(ctx))
	}
	return s.dropAll(fmt.Errorf("%w: silo %s stopped", grain.ErrSiloUnavailable, s.id))
}

// dropAll removes every activation without writing state and fails the
// calls they held. It returns how many it dropped.
func (s *Silo) dropAll(err error) int {
	acts := s.table.snapshot()
	for _, a := range acts {
		s.table.remove(a)
		for _, m := range a.kill() {
			m.complete(nil, err)
		}
	}
	return len(acts)
}

// incarnation is one life of the silo in the cluster: its membership (and
// lease), the directory bound to that lease, and the router using it. A
// fenced silo rejoins with a new incarnation.
type incarnation struct {
	member *cluster.Member
	id     int64
	dir    directory.Directory
	router *router
	// ctx ends when the incarnation is fenced (or the silo stops): it
	// cuts short the writes its activations still have in flight.
	ctx    context.Context
	cancel context.CancelFunc
}

// newIncarnation builds the incarnation of member: its directory (entries
// bound to its lease) and, once the transport exists, its router.
func (s *Silo) newIncarnation(member *cluster.Member) (*incarnation, error) {
	inc := &incarnation{member: member, id: member.Info().Incarnation, dir: s.cfg.directory}
	if inc.dir == nil {
		d, err := directory.NewEtcd(s.etcd, directory.EtcdConfig{
			Prefix: s.cfg.prefix(),
			Lease:  member.LeaseID(),
			Logger: s.log,
		})
		if err != nil {
			return nil, fmt.Errorf("runtime: grain directory: %w", err)
		}
		inc.dir = d
	}
	if s.tc != nil {
		inc.router = &router{self: s.id, dir: inc.dir, view: s.view, tc: s.tc, localLoad: s.table.len, maxMessage: s.cfg.MaxMessageSize}
	}
	inc.ctx, inc.cancel = context.WithCancel(context.Background())
	return inc, nil
}

// watchLease fences the silo when its lease cannot be renewed in time:
// activations are dropped without writing state, because another silo may
// activate the same grains once etcd expires the lease. Then the silo
// rejoins the cluster as a new incarnation and serves again.
func (s *Silo) watchLease() {
	defer s.wg.Done()
	for {
		inc := s.inc.Load()
		select {
		case <-s.leaseDone:
			return
		case <-inc.member.Done():
		}
		inc.cancel()
		n := s.dropAll(fmt.Errorf("%w: silo %s lost its lease", grain.ErrSiloUnavailable, s.id))
		s.log.Error("silo fenced itself: lease not renewed in time; dropped activations without writing state",
			zap.Int64("incarnation", inc.id), zap.Error(inc.member.Err()), zap.Int("dropped", n))
		next, ok := s.rejoin(inc)
		if !ok {
			return
		}
		s.inc.Store(next)
		s.log.Warn("silo rejoined the cluster as a new incarnation",
			zap.Int64("old_incarnation", inc.id), zap.Int64("incarnation", next.id))
	}
}

// rejoin joins the cluster again after inc was fenced, retrying with
// backoff until it succeeds or the silo stops.
func (s *Silo) rejoin(inc *incarnation) (*incarnation, bool) {
	delay := 100 * time.Millisecond
	for {
		if s.stopping.Load() {
			return nil, false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*s.cfg.LeaseTTL)
		go func() { // Stop does not wait for a rejoin
			select {
			case <-s.stopCh:
				cancel()
			case <-ctx.Done():
			}
		}()
		member, err := inc.member.Rejoin(ctx)
		cancel()
		if err == nil && s.stopping.Load() {
			// Stop began meanwhile: do not come back.
			lctx, cancel := context.WithTimeout(context.Background(), s.cfg.LeaseTTL)
			_ = member.Leave(lctx)
			cancel()
			return nil, false
		}
		if err == nil {
			next, err := s.newIncarnation(member)
			if err == nil {
				return next, true
			}
			member.Close()
			s.log.Error("rejoin: directory", zap.Error(err))
		} else {
			s.log.Warn("rejoin failed; retrying", zap.Duration("in", delay), zap.Error(err))
		}
		select {
		case <-s.leaseDone:
			return nil, false
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// collectLoop deactivates activations idle for longer than their collection
// age, scanning once per quantum.
func (s *Silo) collectLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.quantum)
	defer t.Stop()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		scanned := int64(-1) // start of this round's pass; none yet
		select {
		case <-s.stopCh:
			return
		case <-t.C:
			scanned = s.nanotime()
			s.collectOnce()
		case <-s.retryWake:
		case <-retry.C:
			scanned = s.nanotime()
			s.collectOnce()
		}
		if next, ok := s.nextRetry(scanned); ok {
			retry.Reset(time.Duration(next - s.nanotime())) // at once if past
		}
	}
}

// collectAfter makes the collector pass again after d (a deactivation to
// retry), however long its quantum.
func (s *Silo) collectAfter(d time.Duration) {
	s.retryMu.Lock()
	heap.Push((*int64Heap)(&s.retries), s.nanotime()+int64(d))
	s.retryMu.Unlock()
	select {
	case s.retryWake <- struct{}{}:
	default:
	}
}

// nextRetry drops the retry times a pass that began at scanned covered (a
// pass sees as idle what is due by its start) and returns the earliest
// one left, if any: it may be past already.
func (s *Silo) nextRetry(scanned int64) (int64, bool) {
	s.retryMu.Lock()
	defer s.retryMu.Unlock()
	for len(s.retries) > 0 && s.retries[0] <= scanned {
		heap.Pop((*int64Heap)(&s.retries))
	}
	if len(s.retries) == 0 {
		return 0, false
	}
	return s.retries[0], true
}

type int64Heap []int64

func (h int64Heap) Len() int           { return len(h) }
func (h int64Heap) Less(i, j int) bool { return h[i] < h[j] }
func (h int64Heap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *int64Heap) Push(x any)        { *h = append(*h, x.(int64)) }
func (h *int64Heap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func (s *Silo) collectOnce() {
	if s.isFenced() {
		return
	}
	s.publishLoad()
	now := s.nanotime()
	var idle []*activation
	s.table.each(func(a *activation) {
		if a.tryDeactivate(now, int64(a.typ.collectionAge)) {
			idle = append(idle, a)
		}
	})
	if len(idle) == 0 {
		return
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for _, a := range idle {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			a.deactivateNow(context.Background(), grain.DeactivateIdle)
		}()
	}
	wg.Wait()
}

// isFenced reports whether the silo must not serve: its lease was lost, or
// its fence deadline (last keepalive send time + TTL - margin) has passed on
// the monotonic clock, even if the goroutine that reacts to it has not run
// yet.
func (s *Silo) isFenced() bool {
	inc := s.inc.Load()
	return inc == nil || inc.member.Fenced()
}

// deactivationContext is the parent context of a deactivation for reason:
// Stop's context while stopping, so that Stop's deadline bounds it.
func (s *Silo) deactivationContext(reason grain.DeactivationReason) context.Context {
	if reason == grain.DeactivateSiloStopping {
		return s.stopCtx
	}
	return context.Background()
}

// waitGroup waits for wg, or for ctx to end.
func waitGroup(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// publishLoad announces the activation count through membership when it
// changed by more than a tenth since last published (and at most every
// loadInterval), for least-activations placement elsewhere.
func (s *Silo) publishLoad() {
	now := s.nanotime()
	if now-s.loadAt < int64(loadInterval) {
		return
	}
	n := int64(s.table.len())
	if d := n - s.loadSent; d*10 <= s.loadSent && -d*10 <= s.loadSent && !(n == 0 && s.loadSent != 0) {
		return
	}
	s.loadAt = now
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.inc.Load().member.SetLoad(ctx, n); err != nil {
		s.log.Debug("publishing load failed", zap.Error(err))
		return
	}
	s.loadSent = n
}

// loadInterval is the shortest time between two load announcements.
const loadInterval = 5 * time.Second

// ActivationCount returns the number of activations on this silo.
func (s *Silo) ActivationCount() int { return s.table.len() }

// DroppedUnwritten returns how many activations this silo dropped without
// writing state it should have written: a state the storage provider can
// never accept (grain.ErrTooLarge) at deactivation or in a write-behind
// flush, and activations whose state Stop could not write within its
// bound. Each is also logged as an error naming the grain and the reason.
// Activations a fenced silo drops (by design, see Guarantees) are not
// counted.
func (s *Silo) DroppedUnwritten() int64 { return s.droppedUnwritten.Load() }

func (s *Silo) nanotime() int64 { return int64(time.Since(s.epoch)) }

func (s *Silo) goTurns(a *activation) {
	select {
	case s.turnWork <- a: // an idle worker takes it
		return
	default:
	}
	s.wg.Add(1)
	go s.turnWorker(a)
}

// maxIdleTurnWorkers bounds the goroutines that wait for an activation to
// run after running one. Reusing them spares a goroutine start, and the
// stack growth of a fresh goroutine, per burst of turns.
const maxIdleTurnWorkers = 64

// turnWorker runs a's turns, then waits for another activation to run
// unless enough workers already wait or the silo is stopping.
func (s *Silo) turnWorker(a *activation) {
	defer s.wg.Done()
	for {
		a.run()
		if s.idleWorkers.Add(1) > maxIdleTurnWorkers {
			s.idleWorkers.Add(-1)
			return
		}
		select {
		case a = <-s.turnWork:
			s.idleWorkers.Add(-1)
		case <-s.stopCh:
			s.idleWorkers.Add(-1)
			return
		}
	}
}

func (s *Silo) unregister(a *activation) { s.unregisterWithin(context.Background(), a) }

// unregisterWithin removes a's directory entry, within DeactivationTimeout
// and parent (Stop's deadline when stopping).
func (s *Silo) unregisterWithin(parent context.Context, a *activation) {
	ctx, cancel := context.WithTimeout(parent, s.cfg.DeactivationTimeout)
	defer cancel()
	if err := a.directory().Unregister(ctx, a.id, a.entry()); err != nil {
		s.log.Warn("directory unregister failed; the entry goes when the lease does",
			zap.Stringer("grain", a.id), zap.Error(err))
	}
}
