package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Errors reported by Member.Err and returned by Join and Member methods;
// all are errors.Is-checkable.
var (
	// ErrFenced: the silo fenced itself. It could not renew its lease
	// before the fence deadline, or etcd reported the lease gone (then the
	// error also matches ErrLeaseLost). It must not serve calls any more.
	ErrFenced = errors.New("cluster: silo fenced itself")
	// ErrLeaseLost: etcd reports the silo's lease revoked or expired.
	ErrLeaseLost = errors.New("cluster: lease lost")
	// ErrLeft: the member left the cluster (Leave).
	ErrLeft = errors.New("cluster: member left")
	// ErrClosed: the member stopped renewing its lease without leaving
	// (Close).
	ErrClosed = errors.New("cluster: member closed")
	// ErrSiloIDInUse: Join found a live registration with the same silo
	// id.
	ErrSiloIDInUse = errors.New("cluster: silo id in use")
	// ErrNotRegistered: the silo's key is gone or belongs to another
	// incarnation although the lease may still be alive.
	ErrNotRegistered = errors.New("cluster: silo not registered")
)

// keepAliver renews a lease once; clientv3.Lease implements it.
type keepAliver interface {
	KeepAliveOnce(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error)
}

// Member is a silo's registration in the cluster: an etcd lease, kept
// alive by a goroutine the Member owns, and the silo key attached to it.
//
// When the lease cannot be renewed before the fence deadline, or etcd
// reports it gone, the member fences itself: Fenced turns true, Done
// closes and Err says why. The runtime must then stop starting turns, drop
// its activations without writing state, and send no success replies.
type Member struct {
	cfg   Config // validated; Rejoin reuses it
	cli   *clientv3.Client
	ka    keepAliver
	key   string
	lease clientv3.LeaseID
	ttl   time.Duration
	log   *zap.Logger

	base time.Time // monotonic origin of the fence deadline
	// fenceWord packs the fence deadline, as nanoseconds from base, shifted
	// left by one, with the latch in the low bit. The latch is set by the
	// first Fenced that sees the deadline passed, by fencing and by Leave,
	// and never cleared: a renewal publishes a later deadline only by a
	// compare-and-swap from an unlatched word whose deadline has not
	// passed, so Fenced never reads true and then false.
	fenceWord atomic.Int64
	// latched wakes the keepalive goroutine when Fenced latched the
	// member, so that Done closes at once.
	latched chan struct{}

	mu   sync.Mutex // serializes SetStatus and Leave; guards info, left
	info SiloInfo
	left bool

	// beforePublish, if set, runs in the keepalive goroutine between a
	// successful renewal and publishing its deadline (tests).
	beforePublish func()

	loopCtx  context.Context // cancelled to stop the keepalive goroutine
	stopLoop context.CancelFunc
	loopDone chan struct{}

	endOnce sync.Once
	done    chan struct{}
	err     error // written once, before done closes
}

// Join registers a silo in the cluster: it grants a lease with cfg.TTL,
// writes the silo key <prefix>silos/<silo-id> attached to it (status
// Joining, then Active), and starts renewing the lease every TTL/3.
//
// Join fails with ErrSiloIDInUse if a live registration has the same silo
// id, unless cfg.WaitForID is set: then it first waits for an earlier
// incarnation's registration to vanish with its lease. cli stays owned by
// the caller and must outlive the Member.
func Join(ctx context.Context, cli *clientv3.Client, cfg Config) (*Member, error) {
	if cli == nil {
		return nil, errors.New("cluster: nil etcd client")
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	for {
		if cfg.WaitForID {
			if err := waitForID(ctx, cli, cfg); err != nil {
				return nil, fmt.Errorf("cluster: join %s: %w", cfg.SiloID, err)
			}
		}
		m, err := join(ctx, cli, cfg)
		if err == nil || !cfg.WaitForID || !errors.Is(err, ErrSiloIDInUse) || ctx.Err() != nil {
			return m, err
		}
		// Another joiner took the id between the wait and the
		// registration: wait for that one in turn.
	}
}

// idWaitSlack is how long, beyond the holder's lease TTL, Join with
// WaitForID waits for the holder's key to vanish: etcd checks lease
// expiry periodically, and a leader change extends leases a little.
const idWaitSlack = 2 * time.Second

// waitForID returns once cfg.SiloID is not registered, waiting for the
// registration present now to be deleted; it fails with ErrSiloIDInUse if
// the registration outlives its lease TTL (so a live silo renews it).
func waitForID(ctx context.Context, cli *clientv3.Client, cfg Config) error {
	key := siloKey(cfg.Prefix, cfg.SiloID)
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("wait for silo id: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	kv := resp.Kvs[0]
	holder, err := decodeSilo(kv)
	if err != nil {
		holder = SiloInfo{Incarnation: kv.CreateRevision}
	}
	if kv.Lease == 0 {
		return fmt.Errorf("%w: incarnation %d holds it with no lease, so it never expires", ErrSiloIDInUse, holder.Incarnation)
	}
	ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(kv.Lease))
	if err != nil {
		return fmt.Errorf("wait for silo id: lease of incarnation %d: %w", holder.Incarnation, err)
	}
	wait := idWaitSlack
	if ttl.GrantedTTL > 0 {
		wait += time.Duration(ttl.GrantedTTL) * time.Second
	}
	log := cfg.Logger.With(zap.String("silo_id", cfg.SiloID))
	log.Info("cluster: silo id still registered by an earlier incarnation; waiting for its lease to end",
		zap.Int64("holder_incarnation", holder.Incarnation), zap.Stringer("holder_status", holder.Status),
		zap.String("holder_address", holder.Address), zap.Int64("lease_ttl_left_s", ttl.TTL), zap.Duration("max_wait", wait))
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	wch := cli.Watch(clientv3.WithRequireLeader(wctx), key, clientv3.WithRev(resp.Header.Revision+1), clientv3.WithFilterPut())
	for wr := range wch {
		if err := wr.Err(); err != nil {
			if wctx.Err() != nil {
				break
			}
			return fmt.Errorf("wait for silo id: watch: %w", err)
		}
		if len(wr.Events) > 0 {
			log.Info("cluster: earlier incarnation's registration is gone", zap.Int64("holder_incarnation", holder.Incarnation))
			return nil
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("wait for silo id held by incarnation %d: %w", holder.Incarnation, err)
	}
	return fmt.Errorf("%w: incarnation %d (%s, %s) still holds it %v after Join started waiting, longer than its lease TTL: a live silo renews it",
		ErrSiloIDInUse, holder.Incarnation, holder.Status, holder.Address, wait)
}

// join makes one attempt at registering.
func join(ctx context.Context, cli *clientv3.Client, cfg Config) (*Member, error) {
	sent := time.Now()
	g, err := cli.Grant(ctx, int64(cfg.TTL/time.Second))
	if err != nil {
		return nil, fmt.Errorf("cluster: join %s: grant lease: %w", cfg.SiloID, err)
	}
	k := newKeeper(sent, time.Duration(g.TTL)*time.Second, cfg.FenceMargin)
	m := newMember(cli, cli, cfg, g.ID, k, SiloInfo{
		SiloID:         cfg.SiloID,
		Address:        cfg.Address,
		GatewayAddress: cfg.GatewayAddress,
		Status:         StatusJoining,
		GrainTypes:     cfg.GrainTypes,
		StatelessTypes: cfg.StatelessTypes,
		StartedAt:      time.Now().Round(0),
	})
	if err := m.register(ctx, k); err != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), k.ttl)
		defer cancel()
		if _, rerr := cli.Revoke(rctx, g.ID); rerr != nil {
			m.log.Warn("cluster: revoke lease after failed join", zap.Error(rerr))
		}
		m.stopLoop()
		return nil, fmt.Errorf("cluster: join %s: %w", cfg.SiloID, err)
	}
	m.log.Info("cluster: silo joined",
		zap.Int64("incarnation", m.info.Incarnation), zap.String("lease", fmt.Sprintf("%x", int64(g.ID))),
		zap.Duration("ttl", k.ttl), zap.Time("fence_deadline", m.FenceDeadline()))
	go m.run(k) // k belongs to the goroutine from here on
	return m, nil
}

// Rejoin registers the silo again, as a new incarnation with the same
// configuration (silo id, addresses, grain types), after this member
// stopped being live: it fenced itself, or was closed or left. It returns
// an error if the member is still live.
//
// Rejoin first cleans up after this incarnation as Leave does: it deletes
// the silo key if it is still this incarnation's and revokes the lease,
// which also removes the directory entries attached to it. Call it only
// once the runtime has stopped serving as this incarnation (after fencing
// it drops its activations without writing state). If etcd cannot be
// reached for that cleanup, the registration ends with the lease instead;
// Rejoin then waits for it as Config.WaitForID does. ctx bounds the whole
// rejoin.
func (m *Member) Rejoin(ctx context.Context) (*Member, error) {
	if m.Err() == nil {
		return nil, fmt.Errorf("cluster: rejoin %s: the member is still live; Leave or Close it first", m.cfg.SiloID)
	}
	if err := m.Leave(ctx); err != nil {
		m.log.Warn("cluster: rejoin: could not remove the previous registration; waiting for its lease to end instead", zap.Error(err))
	}
	cfg := m.cfg
	cfg.WaitForID = true
	next, err := Join(ctx, m.cli, cfg)
	if err != nil {
		return nil, err // "cluster: join <silo-id>: ..."
	}
	m.log.Info("cluster: silo rejoined as a new incarnation",
		zap.Int64("previous_incarnation", m.Info().Incarnation), zap.Int64("incarnation", next.Info().Incarnation))
	return next, nil
}

// newMember builds a Member whose lease was granted; the caller starts
// its keepalive goroutine with go m.run(k).
func newMember(cli *clientv3.Client, ka keepAliver, cfg Config, lease clientv3.LeaseID, k *keeper, info SiloInfo) *Member {
	m := &Member{
		cfg:      cfg,
		cli:      cli,
		ka:       ka,
		key:      siloKey(cfg.Prefix, cfg.SiloID),
		lease:    lease,
		ttl:      k.ttl,
		log:      cfg.Logger.With(zap.String("silo_id", cfg.SiloID)),
		base:     time.Now(),
		info:     info,
		loopDone: make(chan struct{}),
		latched:  make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	m.loopCtx, m.stopLoop = context.WithCancel(context.Background())
	m.fenceWord.Store(int64(k.deadline.Sub(m.base)) << 1)
	return m
}

// register creates the silo key (Joining), records the incarnation, and
// turns it Active.
func (m *Member) register(ctx context.Context, k *keeper) error {
	val, err := encodeSilo(m.info)
	if err != nil {
		return err
	}
	resp, err := m.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(m.key), "=", 0)).
		Then(clientv3.OpPut(m.key, val, clientv3.WithLease(m.lease))).
		Else(clientv3.OpGet(m.key)).
		Commit()
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	if !resp.Succeeded {
		if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
			if other, err := decodeSilo(kvs[0]); err == nil {
				return fmt.Errorf("%w: incarnation %d (%s, %s) holds it until its lease ends",
					ErrSiloIDInUse, other.Incarnation, other.Status, other.Address)
			}
		}
		return ErrSiloIDInUse
	}
	m.info.Incarnation = resp.Header.Revision
	active := m.info
	active.Status = StatusActive
	if err := m.put(ctx, active); err != nil {
		return err
	}
	m.info = active
	if k.expired(time.Now()) {
		return errors.New("registration took longer than the lease allows")
	}
	return nil
}

// put writes info to the silo key, if the key is still this incarnation's.
func (m *Member) put(ctx context.Context, info SiloInfo) error {
	val, err := encodeSilo(info)
	if err != nil {
		return err
	}
	resp, err := m.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(m.key), "=", m.info.Incarnation)).
		Then(clientv3.OpPut(m.key, val, clientv3.WithLease(m.lease))).
		Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return ErrNotRegistered
	}
	return nil
}

// run renews the lease until the member is stopped or fences itself. It is
// the Member's only goroutine; it exits through loopDone.
func (m *Member) run(k *keeper) {
	defer close(m.loopDone)
	timer := time.NewTimer(time.Until(k.next))
	defer timer.Stop()
	for {
		select {
		case <-m.loopCtx.Done():
			return
		case <-timer.C:
		case <-m.latched:
		}
		sent := time.Now()
		if k.expired(sent) || m.fenceWord.Load()&1 != 0 {
			m.fence(fmt.Errorf("%w: lease not renewed by the fence deadline (%d consecutive keepalives failed)", ErrFenced, k.failures))
			return
		}
		ctx, cancel := context.WithDeadline(m.loopCtx, k.attemptDeadline(sent))
		resp, err := m.ka.KeepAliveOnce(ctx, m.lease)
		cancel()
		now := time.Now()
		switch {
		case m.loopCtx.Err() != nil:
			return
		case err == nil && k.expired(now):
			// Renewed, but too late: the runtime may already have acted on
			// the deadline, so the silo cannot come back.
			m.fence(fmt.Errorf("%w: keepalive answered after the fence deadline", ErrFenced))
			return
		case err == nil:
			k.renewed(sent, time.Duration(resp.TTL)*time.Second)
			if m.beforePublish != nil {
				m.beforePublish()
			}
			if !m.publish(k.deadline) {
				// The old deadline passed before the renewal could be
				// published, and the runtime may have acted on it.
				m.fence(fmt.Errorf("%w: keepalive answered before the fence deadline but published after it", ErrFenced))
				return
			}
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			m.fence(fmt.Errorf("%w: %w: etcd reports lease %x revoked or expired", ErrFenced, ErrLeaseLost, int64(m.lease)))
			return
		default:
			k.failed(now)
			m.log.Warn("cluster: lease keepalive failed; retrying",
				zap.Error(err), zap.Int("failures", k.failures),
				zap.Duration("until_fence", k.deadline.Sub(now)))
		}
		timer.Reset(time.Until(k.next))
	}
}

// publish makes deadline the fence deadline, unless the member is
// latched fenced or the current deadline has passed; it reports whether it
// did.
func (m *Member) publish(deadline time.Time) bool {
	next := int64(deadline.Sub(m.base)) << 1
	for {
		w := m.fenceWord.Load()
		if w&1 != 0 || m.passed(w) {
			m.latch()
			return false
		}
		if m.fenceWord.CompareAndSwap(w, next) {
			return true
		}
	}
}

// passed reports whether the deadline in w has passed.
func (m *Member) passed(w int64) bool { return time.Since(m.base) >= time.Duration(w>>1) }

// latch fences the member for good, whatever the clock says.
func (m *Member) latch() { m.fenceWord.Or(1) }

func (m *Member) fence(cause error) {
	m.latch()
	m.log.Error("cluster: silo fenced itself: it must stop serving; its lease no longer protects its grains",
		zap.Error(cause), zap.String("lease", fmt.Sprintf("%x", int64(m.lease))),
		zap.Time("fence_deadline", m.FenceDeadline()))
	m.end(cause)
}

func (m *Member) end(err error) {
	m.endOnce.Do(func() {
		m.err = err
		close(m.done)
	})
}

// Done is closed when the member stops being a live member of the
// cluster: it fenced itself, left, or was closed. Err then says which.
func (m *Member) Done() <-chan struct{} { return m.done }

// Err returns nil while Done is open, then why it closed: an error
// matching ErrFenced (and ErrLeaseLost when etcd reported the lease gone),
// ErrLeft or ErrClosed.
func (m *Member) Err() error {
	select {
	case <-m.done:
		return m.err
	default:
		return nil
	}
}

// FenceDeadline returns the instant at which the silo must stop serving
// unless the lease is renewed before: the send time of the last successful
// keepalive + TTL - FenceMargin. It carries a monotonic clock reading;
// compare it with time.Now, not with wall-clock times from elsewhere.
func (m *Member) FenceDeadline() time.Time {
	return m.base.Add(time.Duration(m.fenceWord.Load() >> 1))
}

// Fenced reports whether the silo must not start turns: it fenced itself,
// left, or the fence deadline has passed (also after Close, as a crashed
// silo's lease runs out). Once it returns true it returns true for ever:
// fencing latches per incarnation, and a keepalive answered in time but
// published after the deadline fences the member instead of renewing it.
// It is cheap enough to call before every turn.
func (m *Member) Fenced() bool {
	w := m.fenceWord.Load()
	if w&1 != 0 {
		return true
	}
	if !m.passed(w) {
		return false
	}
	// Latch, so that a renewal published after this instant cannot
	// unfence the member; the keepalive goroutine then fences it.
	m.latch()
	select {
	case m.latched <- struct{}{}:
	default:
	}
	return true
}

// LeaseID returns the silo's lease; directory entries of the silo's
// activations are attached to it.
func (m *Member) LeaseID() clientv3.LeaseID { return m.lease }

// TTL returns the lease TTL etcd granted, which may exceed Config.TTL.
func (m *Member) TTL() time.Duration { return m.ttl }

// Info returns what the silo last published about itself.
func (m *Member) Info() SiloInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	info := m.info
	info.GrainTypes = append([]string(nil), info.GrainTypes...)
	info.StatelessTypes = append([]string(nil), info.StatelessTypes...)
	info.lease = m.lease
	return info
}

// SetStatus publishes status. It fails if the member is no longer live, or
// with ErrNotRegistered if the silo key is gone.
func (m *Member) SetStatus(ctx context.Context, status Status) error {
	if status < StatusJoining || status > StatusShuttingDown {
		return fmt.Errorf("cluster: set status %s: only joining, active and shutting-down can be published", status)
	}
	return m.update(ctx, "set status "+status.String(), func(info *SiloInfo) { info.Status = status })
}

// SetLoad publishes the silo's activation count, for placement by other
// silos and clients. It writes only if the member is live.
func (m *Member) SetLoad(ctx context.Context, activations int64) error {
	return m.update(ctx, "set load", func(info *SiloInfo) { info.Activations = activations })
}

// update publishes the silo's record changed by change, if the member is
// live; op names the change in errors.
func (m *Member) update(ctx context.Context, op string, change func(*SiloInfo)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.Err(); err != nil {
		return fmt.Errorf("cluster: %s: %w", op, err)
	}
	info := m.info
	change(&info)
	if err := m.put(ctx, info); err != nil {
		return fmt.Errorf("cluster: %s: %w", op, err)
	}
	m.info = info
	return nil
}

// Leave leaves the cluster gracefully: it publishes ShuttingDown, stops
// renewing the lease, deletes the silo key and revokes the lease, which
// also removes every directory entry still attached to it. Call it after
// the runtime deactivated its grains. Leave is idempotent; after an error
// it may be called again. It also cleans up after Close or fencing.
func (m *Member) Leave(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.left {
		return nil
	}
	if m.Err() == nil && m.info.Status != StatusShuttingDown {
		info := m.info
		info.Status = StatusShuttingDown
		switch err := m.put(ctx, info); {
		case err == nil:
			m.info = info
		case errors.Is(err, ErrNotRegistered), errors.Is(err, rpctypes.ErrLeaseNotFound):
			// Nothing left to announce.
		default:
			return fmt.Errorf("cluster: leave: %w", err)
		}
	}
	m.stopLoop()
	<-m.loopDone
	_, err := m.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(m.key), "=", m.info.Incarnation)).
		Then(clientv3.OpDelete(m.key)).
		Commit()
	if err != nil {
		return fmt.Errorf("cluster: leave: delete silo key: %w", err)
	}
	if _, err := m.cli.Revoke(ctx, m.lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("cluster: leave: revoke lease: %w", err)
	}
	m.left = true
	m.latch()
	m.end(ErrLeft)
	m.log.Info("cluster: silo left the cluster", zap.Int64("incarnation", m.info.Incarnation))
	return nil
}

// Close stops renewing the lease without leaving: the silo key and the
// directory entries stay until etcd expires the lease, as after a crash.
// Done closes with ErrClosed (unless it closed before), and Fenced turns
// true at the fence deadline. Close is idempotent and returns nil.
func (m *Member) Close() error {
	m.stopLoop()
	<-m.loopDone
	m.end(ErrClosed)
	return nil
}
