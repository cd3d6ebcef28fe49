package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// ErrViewClosed is returned by View.Err and View.WaitFor once the view has
// stopped: Close was called, the context given to WatchView ended, or the
// etcd client was closed.
var ErrViewClosed = errors.New("cluster: membership view closed")

// Defaults of the view options.
const (
	// DefaultDeadRetention is how long a view keeps a dead silo's entry
	// (status Dead) in its snapshots.
	DefaultDeadRetention = time.Minute
	// DefaultDeadLimit is how many dead entries a view keeps at most.
	DefaultDeadLimit = 64
	// DefaultViewRetryMin and DefaultViewRetryMax bound the pause between
	// attempts to reload the view after its watch failed. The first reload
	// after a healthy watch ended is immediate.
	DefaultViewRetryMin = 50 * time.Millisecond
	DefaultViewRetryMax = 5 * time.Second
)

// viewRequestTimeout bounds each Get the view sends (the initial load and
// every reload).
const viewRequestTimeout = 5 * time.Second

// ViewOption configures WatchView.
type ViewOption func(*viewConfig)

type viewConfig struct {
	log           *zap.Logger
	deadRetention time.Duration
	deadLimit     int
	retryMin      time.Duration
	retryMax      time.Duration
}

// WithViewLogger sets the logger of the view: joins, status changes and
// deaths at info (a silo that vanished without announcing ShuttingDown at
// warn), watch failures and reloads at warn. Default: no logs.
func WithViewLogger(l *zap.Logger) ViewOption {
	return func(c *viewConfig) {
		if l != nil {
			c.log = l
		}
	}
}

// WithDeadRetention sets how long (age) and how many (limit) dead silo
// entries the view keeps in its snapshots; non-positive values keep the
// defaults (DefaultDeadRetention, DefaultDeadLimit). Entries beyond them
// are dropped, oldest first, the next time the view changes. Whether an
// incarnation is dead does not depend on them: see Snapshot.IsDead.
func WithDeadRetention(age time.Duration, limit int) ViewOption {
	return func(c *viewConfig) {
		if age > 0 {
			c.deadRetention = age
		}
		if limit > 0 {
			c.deadLimit = limit
		}
	}
}

// WithViewRetry sets the bounds of the exponential backoff between reload
// attempts after the watch failed; non-positive values keep the defaults
// (DefaultViewRetryMin, DefaultViewRetryMax).
func WithViewRetry(minDelay, maxDelay time.Duration) ViewOption {
	return func(c *viewConfig) {
		if minDelay > 0 {
			c.retryMin = minDelay
		}
		if maxDelay > 0 {
			c.retryMax = maxDelay
		}
		c.retryMax = max(c.retryMax, c.retryMin)
	}
}

// Snapshot is one immutable version of the membership view. A View swaps
// in a new Snapshot for every change; a Snapshot, its slices and the
// SiloInfo values in them never change afterwards and are shared by every
// reader: do not modify them.
type Snapshot struct {
	// Version is the etcd revision the snapshot reflects: it includes
	// every change under <prefix>silos/ up to and including this revision
	// and none after. It grows with every snapshot of a view (as long as
	// the etcd cluster keeps its data; see WatchView).
	Version int64
	// Silos has one entry per silo id, sorted by silo id: every
	// registered silo (Joining, Active, ShuttingDown), and the silos the
	// view saw vanish (lease expired or revoked, Leave) with status Dead,
	// for a bounded time (WithDeadRetention). A silo id that rejoined
	// appears once, as its newest incarnation.
	Silos []SiloInfo

	active   []SiloInfo
	gateways []SiloInfo
	hosting  map[string][]SiloInfo
	// stateless holds the grain types an active silo hosts as
	// stateless workers.
	stateless map[string]bool
	changed   chan struct{}
}

// Active returns the silos with status Active, sorted by silo id. The
// slice is shared: do not modify it. It does not allocate.
func (s *Snapshot) Active() []SiloInfo { return s.active }

// Gateways returns the active silos with a gateway address, sorted by
// silo id. The slice is shared: do not modify it.
func (s *Snapshot) Gateways() []SiloInfo { return s.gateways }

// Hosting returns the active silos whose GrainTypes include grainType,
// sorted by silo id; nil if there are none. The slice is shared: do not
// modify it.
func (s *Snapshot) Hosting(grainType string) []SiloInfo { return s.hosting[grainType] }

// StatelessWorker reports whether an active silo hosting grainType says
// it hosts it as a stateless worker (SiloInfo.StatelessTypes).
func (s *Snapshot) StatelessWorker(grainType string) bool { return s.stateless[grainType] }

// Get returns the entry for siloID: its newest incarnation, registered or
// (for a while) dead.
func (s *Snapshot) Get(siloID string) (SiloInfo, bool) {
	i, ok := slices.BinarySearchFunc(s.Silos, siloID, func(e SiloInfo, id string) int { return cmp.Compare(e.SiloID, id) })
	if !ok {
		return SiloInfo{}, false
	}
	return s.Silos[i], true
}

// IsDead reports whether the given incarnation of siloID is known to have
// ended: its incarnation is at most the snapshot's Version and the
// snapshot does not hold it registered. This is exact and needs no
// tombstones: an incarnation is the revision that created the silo key,
// a key with that create revision exists until it is deleted, and the
// snapshot reflects every change up to Version. So a message from any
// incarnation that ended, however long ago, is recognised. An incarnation
// newer than Version is from a silo that joined after the snapshot; IsDead
// reports false for it.
func (s *Snapshot) IsDead(siloID string, incarnation int64) bool {
	if incarnation > s.Version {
		return false
	}
	info, ok := s.Get(siloID)
	return !ok || info.Incarnation != incarnation || info.Status == StatusDead
}

// Changed returns a channel that is closed when the view installs a newer
// snapshot. Any number of goroutines may wait on it; notifications
// coalesce (a waiter sees the newest snapshot, not each one in between).
// The channel of the last snapshot of a closed view is never closed: wait
// on View.Done as well.
func (s *Snapshot) Changed() <-chan struct{} { return s.changed }

// undecodableLogEvery is how often at most a View logs a silo key it skips
// because its record does not decode.
const undecodableLogEvery = 10 * time.Second

// View is a silo's (or client's) versioned membership view: a copy of
// <prefix>silos/ kept up to date by an etcd watch. Readers call Current,
// which takes no lock.
type View struct {
	cli    *clientv3.Client
	prefix string // <prefix>silos/
	cfg    viewConfig
	log    *zap.Logger
	// undecodable logs silo keys the view skips because their records do
	// not decode: at most one line per undecodableLogEvery, so that a
	// corrupted or hostile record rewritten in a loop cannot flood the log.
	undecodable *zap.Logger

	cur atomic.Pointer[Snapshot]

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	errMu sync.Mutex
	err   error

	// Owned by the view's goroutine (and by WatchView before it starts).
	entries map[string]viewEntry
	version int64
}

type viewEntry struct {
	info   SiloInfo
	deadAt time.Time // when the view saw the silo die; zero while registered
}

// WatchView loads the silos registered under prefix and starts a
// goroutine that keeps the view up to date with an etcd watch from the
// revision of that load. It returns once the first snapshot is loaded, or
// with an error if etcd did not answer (each request is bounded by 5 s).
//
// ctx bounds the view's whole life, not only the load: when it ends, the
// view stops as if closed. cli stays owned by the caller and must outlive
// the view; closing it stops the view too.
//
// When the watch fails (etcd unreachable past the client's own retries, a
// leader loss, the watched revision compacted), the view keeps serving its
// last snapshot, reloads with a Get and watches again, retrying with
// backoff; silos that vanished meanwhile are marked Dead. Err reports the
// failure until the view has recovered. If etcd answers with a revision
// below the view's Version (the etcd cluster was restored from a backup or
// replaced), the view logs an error and adopts etcd's state and revision.
func WatchView(ctx context.Context, cli *clientv3.Client, prefix string, opts ...ViewOption) (*View, error) {
	if cli == nil {
		return nil, errors.New("cluster: watch view: nil etcd client")
	}
	if err := checkPrefix(prefix); err != nil {
		return nil, err
	}
	cfg := viewConfig{
		log:           zap.NewNop(),
		deadRetention: DefaultDeadRetention,
		deadLimit:     DefaultDeadLimit,
		retryMin:      DefaultViewRetryMin,
		retryMax:      DefaultViewRetryMax,
	}
	for _, o := range opts {
		o(&cfg)
	}
	v := &View{
		cli:     cli,
		prefix:  silosPrefix(prefix),
		cfg:     cfg,
		log:     cfg.log.With(zap.String("prefix", prefix)),
		done:    make(chan struct{}),
		entries: make(map[string]viewEntry),
	}
	v.undecodable = v.log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(c, undecodableLogEvery, 1, 0)
	}))
	resp, err := v.get(ctx)
	if err != nil {
		return nil, fmt.Errorf("cluster: watch view: load silos: %w", err)
	}
	v.merge(resp)
	v.ctx, v.cancel = context.WithCancel(ctx)
	s := v.Current()
	v.log.Info("cluster: membership view loaded", zap.Int64("version", s.Version),
		zap.Int("silos", len(s.Silos)), zap.Int("active", len(s.active)))
	go v.run()
	return v, nil
}

// Current returns the newest snapshot. It takes no lock and does not
// allocate; call it as often as needed.
func (v *View) Current() *Snapshot { return v.cur.Load() }

// WaitFor returns the first snapshot, starting with the current one, for
// which cond returns true. cond runs on the caller's goroutine and must
// not modify the snapshot. If ctx ends or the view closes first, WaitFor
// returns the last snapshot it tested and an error (ctx.Err() or
// ErrViewClosed, wrapped).
func (v *View) WaitFor(ctx context.Context, cond func(*Snapshot) bool) (*Snapshot, error) {
	for {
		s := v.Current()
		if cond(s) {
			return s, nil
		}
		select {
		case <-s.changed:
		case <-ctx.Done():
			return s, fmt.Errorf("cluster: wait for membership view (at version %d): %w", s.Version, ctx.Err())
		case <-v.done:
			if last := v.Current(); last != s {
				continue // test the final snapshot too
			}
			return s, fmt.Errorf("cluster: wait for membership view (at version %d): %w", s.Version, ErrViewClosed)
		}
	}
}

// Done is closed when the view has stopped (Close, the context ended, or
// the etcd client was closed) and its goroutine has exited.
func (v *View) Done() <-chan struct{} { return v.done }

// Err reports the view's health: nil while it watches etcd normally; the
// error that interrupted its watch or its last failed reload while it is
// recovering (it still serves the last snapshot, which may be stale);
// ErrViewClosed (possibly wrapped) once it has stopped.
func (v *View) Err() error {
	v.errMu.Lock()
	defer v.errMu.Unlock()
	return v.err
}

func (v *View) setErr(err error) {
	v.errMu.Lock()
	v.err = err
	v.errMu.Unlock()
}

// Close stops the view and waits for its goroutine to exit. Current keeps
// returning the last snapshot. Close is idempotent and returns nil.
func (v *View) Close() error {
	v.cancel()
	<-v.done
	return nil
}

// run is the view's only goroutine: it watches, and when the watch ends,
// reloads and watches again, until the view is stopped.
func (v *View) run() {
	defer close(v.done)
	fails := 0 // consecutive failures, for the backoff
	for {
		if stop := v.stopped(); stop != nil {
			v.setErr(stop)
			v.log.Info("cluster: membership view stopped", zap.Int64("version", v.version), zap.NamedError("reason", stop))
			return
		}
		started := time.Now()
		err := v.watch()
		if v.stopped() != nil {
			continue
		}
		if time.Since(started) >= v.cfg.retryMax {
			fails = 0 // the watch was healthy for a while
		}
		v.setErr(err)
		v.log.Warn("cluster: membership watch failed; reloading the view, serving the last snapshot meanwhile",
			zap.Error(err), zap.Int64("version", v.version))
		for {
			fails++
			if !v.sleep(v.backoff(fails)) {
				break // stopped: reported at the top of the loop
			}
			resp, err := v.get(v.ctx)
			if err == nil {
				before := v.version
				// Healthy before the new snapshot is published: whoever
				// sees it sees Err nil.
				v.setErr(nil)
				v.merge(resp)
				v.log.Info("cluster: membership view reloaded; watching again",
					zap.Int64("from_version", before), zap.Int64("version", v.version),
					zap.Int("silos", len(v.Current().Silos)), zap.Int("attempts", fails))
				break
			}
			if v.stopped() != nil {
				break
			}
			v.setErr(fmt.Errorf("cluster: reload membership view: %w", err))
			v.log.Warn("cluster: membership view reload failed; retrying",
				zap.Error(err), zap.Int("attempts", fails), zap.Duration("retry_in", v.backoff(fails+1)))
		}
	}
}

// stopped returns why the view must stop, or nil.
func (v *View) stopped() error {
	switch {
	case v.ctx.Err() != nil:
		return ErrViewClosed
	case v.cli.Ctx().Err() != nil:
		return fmt.Errorf("%w: etcd client closed", ErrViewClosed)
	}
	return nil
}

// backoff is the pause before the fails-th consecutive reload attempt:
// none for the first, then retryMin doubling up to retryMax.
func (v *View) backoff(fails int) time.Duration {
	if fails <= 1 {
		return 0
	}
	d := v.cfg.retryMin
	for i := 2; i < fails && d < v.cfg.retryMax; i++ {
		d *= 2
	}
	return min(d, v.cfg.retryMax)
}

// sleep pauses for d; false if the view was stopped meanwhile.
func (v *View) sleep(d time.Duration) bool {
	if d <= 0 {
		return v.stopped() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return v.stopped() == nil
	case <-v.ctx.Done():
		return false
	case <-v.cli.Ctx().Done():
		return false
	}
}

func (v *View) get(ctx context.Context) (*clientv3.GetResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, viewRequestTimeout)
	defer cancel()
	return v.cli.Get(ctx, v.prefix, clientv3.WithPrefix())
}

// watch watches <prefix>silos/ from the view's version+1 and applies what
// it receives until the watch ends; it returns why.
func (v *View) watch() error {
	// WithRequireLeader: a watch served by an etcd member cut off from the
	// leader is cancelled instead of silently going stale.
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(v.ctx))
	defer cancel()
	from := v.version + 1
	wch := v.cli.Watch(ctx, v.prefix, clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(from))
	for wr := range wch {
		if err := wr.Err(); err != nil {
			if wr.CompactRevision != 0 {
				return fmt.Errorf("cluster: membership watch from revision %d: etcd compacted up to %d: %w", from, wr.CompactRevision, err)
			}
			return fmt.Errorf("cluster: membership watch from revision %d: %w", from, err)
		}
		if len(wr.Events) > 0 {
			v.apply(wr.Events)
		}
	}
	return fmt.Errorf("cluster: membership watch from revision %d: watch channel closed", from)
}

// apply applies the events of one watch response and publishes the
// result.
func (v *View) apply(evs []*clientv3.Event) {
	now := time.Now()
	version := v.version
	for _, ev := range evs {
		version = max(version, ev.Kv.ModRevision)
		id := strings.TrimPrefix(string(ev.Kv.Key), v.prefix)
		prev, had := v.entries[id]
		switch ev.Type {
		case mvccpb.PUT:
			info, err := decodeSilo(ev.Kv)
			if err != nil {
				v.undecodable.Error("cluster: membership view: ignoring an undecodable silo key", zap.Error(err))
				continue
			}
			info.SiloID = id
			if had && prev.info.Status != StatusDead && prev.info.Incarnation != info.Incarnation {
				v.logDeath(prev.info, "replaced by a newer incarnation")
			}
			v.logUpdate(prev, had, info)
			v.entries[id] = viewEntry{info: info}
		case mvccpb.DELETE:
			if !had || prev.info.Status == StatusDead {
				if ev.PrevKv == nil {
					continue // never seen alive; nothing to record
				}
				info, err := decodeSilo(ev.PrevKv)
				if err != nil {
					continue
				}
				info.SiloID = id
				prev = viewEntry{info: info}
			}
			dead := prev.info
			v.logDeath(dead, "")
			dead.Status = StatusDead
			v.entries[id] = viewEntry{info: dead, deadAt: now}
		}
	}
	v.publish(version, now)
}

// merge installs the result of a Get: the registered silos as they are,
// and every silo the view held registered that is gone (or replaced by a
// newer incarnation) as dead.
func (v *View) merge(resp *clientv3.GetResponse) {
	now := time.Now()
	rev := resp.Header.Revision
	if rev < v.version {
		v.log.Error("cluster: etcd revision went backwards: was the etcd cluster restored from a backup or replaced? Incarnations may repeat; adopting etcd's state",
			zap.Int64("version", v.version), zap.Int64("etcd_revision", rev))
	}
	fresh := make(map[string]SiloInfo, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		info, err := decodeSilo(kv)
		if err != nil {
			v.undecodable.Error("cluster: membership view: ignoring an undecodable silo key", zap.Error(err))
			continue
		}
		info.SiloID = strings.TrimPrefix(string(kv.Key), v.prefix)
		fresh[info.SiloID] = info
	}
	for id, e := range v.entries {
		if e.info.Status == StatusDead {
			continue
		}
		if f, ok := fresh[id]; !ok || f.Incarnation != e.info.Incarnation {
			v.logDeath(e.info, "vanished while the view was not watching")
			dead := e.info
			dead.Status = StatusDead
			v.entries[id] = viewEntry{info: dead, deadAt: now}
		}
	}
	for id, info := range fresh {
		prev, had := v.entries[id]
		v.logUpdate(prev, had, info)
		v.entries[id] = viewEntry{info: info}
	}
	v.publish(rev, now)
}

func (v *View) logUpdate(prev viewEntry, had bool, info SiloInfo) {
	switch {
	case !had || prev.info.Status == StatusDead || prev.info.Incarnation != info.Incarnation:
		v.log.Info("cluster: silo joined", zap.String("silo", info.SiloID), zap.Int64("incarnation", info.Incarnation),
			zap.Stringer("status", info.Status), zap.String("address", info.Address), zap.Strings("grain_types", info.GrainTypes))
	case prev.info.Status != info.Status:
		v.log.Info("cluster: silo status changed", zap.String("silo", info.SiloID), zap.Int64("incarnation", info.Incarnation),
			zap.Stringer("from", prev.info.Status), zap.Stringer("to", info.Status))
	}
}

func (v *View) logDeath(info SiloInfo, how string) {
	fields := []zap.Field{zap.String("silo", info.SiloID), zap.Int64("incarnation", info.Incarnation),
		zap.Stringer("last_status", info.Status), zap.String("address", info.Address)}
	if how != "" {
		fields = append(fields, zap.String("how", how))
	}
	if info.Status == StatusShuttingDown {
		v.log.Info("cluster: silo left", fields...)
		return
	}
	v.log.Warn("cluster: silo dead: its registration vanished without a graceful shutdown (lease expired or revoked)", fields...)
}

// publish prunes old dead entries and swaps in a snapshot of the entries
// at version, then wakes the waiters of the previous one.
func (v *View) publish(version int64, now time.Time) {
	v.prune(now)
	v.version = version
	s := &Snapshot{
		Version: version,
		Silos:   make([]SiloInfo, 0, len(v.entries)),
		hosting: make(map[string][]SiloInfo),
		changed: make(chan struct{}),
	}
	for _, e := range v.entries {
		s.Silos = append(s.Silos, e.info)
	}
	slices.SortFunc(s.Silos, func(a, b SiloInfo) int { return cmp.Compare(a.SiloID, b.SiloID) })
	for _, info := range s.Silos {
		if info.Status != StatusActive {
			continue
		}
		s.active = append(s.active, info)
		if info.GatewayAddress != "" {
			s.gateways = append(s.gateways, info)
		}
		for _, t := range info.GrainTypes {
			if h := s.hosting[t]; len(h) == 0 || h[len(h)-1].SiloID != info.SiloID { // GrainTypes may repeat a type
				s.hosting[t] = append(h, info)
			}
		}
		for _, t := range info.StatelessTypes {
			if s.stateless == nil {
				s.stateless = make(map[string]bool)
			}
			s.stateless[t] = true
		}
	}
	// Full slice expressions: a caller's append copies instead of
	// writing into the shared backing array.
	s.Silos = s.Silos[:len(s.Silos):len(s.Silos)]
	s.active = s.active[:len(s.active):len(s.active)]
	s.gateways = s.gateways[:len(s.gateways):len(s.gateways)]
	for t, h := range s.hosting {
		s.hosting[t] = h[:len(h):len(h)]
	}
	if old := v.cur.Swap(s); old != nil {
		close(old.changed)
	}
}

// prune drops dead entries older than the retention, then the oldest ones
// beyond the limit.
func (v *View) prune(now time.Time) {
	var dead []string
	for id, e := range v.entries {
		if e.info.Status != StatusDead {
			continue
		}
		if now.Sub(e.deadAt) > v.cfg.deadRetention {
			delete(v.entries, id)
			continue
		}
		dead = append(dead, id)
	}
	if len(dead) <= v.cfg.deadLimit {
		return
	}
	slices.SortFunc(dead, func(a, b string) int {
		return cmp.Or(v.entries[a].deadAt.Compare(v.entries[b].deadAt), cmp.Compare(a, b))
	})
	for _, id := range dead[:len(dead)-v.cfg.deadLimit] {
		delete(v.entries, id)
	}
}
