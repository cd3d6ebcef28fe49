package runtime

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/zap"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/cluster"
	"github.com/granary-rt/granary/runtime/internal/transport"
	"github.com/granary-rt/granary/runtime/reminder"
)

// Durable reminders.
//
// The reminder space is split into reminder.Buckets hash buckets. Each
// bucket is owned by one active silo of the membership view, chosen by
// rendezvous hashing, so every silo computes the same owner from the same
// view. The owner loads its buckets' reminders from the table, keeps them
// in a heap ordered by next due time, and fires each due tick by calling
// the grain (which activates it wherever the directory places it).
//
// Progress: every ProgressInterval the owner records in the table, per
// bucket, that every tick due before the earliest tick it has not yet
// delivered was delivered, but never past the start of its last listing
// of the bucket: a reminder registered later, whose notice the owner never
// got, is then not skipped by the silo that takes the bucket over if the
// owner crashes. A silo that takes a bucket over (its owner died, left, or
// a silo joined) starts from that record: a tick due after it that is
// already past fires once, at once, with Tick.Missed counting the ticks
// folded into it. Ticks delivered after the record fire again (at least
// once, not exactly once); none is silently lost.
//
// Registration: the silo that writes a reminder to the table tells the
// owner of its bucket in its view (a notice), and the owner reloads that
// reminder. A silo applies a notice only while it owns the bucket in its
// own view, and otherwise answers "not owner". Views lag each other, so
// the silo told may not stay the owner: while a silo joins, a registering
// silo whose view is behind tells (or is itself) a silo that still owns
// the bucket in its own stale view, while the new owner listed the bucket
// before the write and would not list it again for a
// ReminderRefreshInterval. So the registering silo keeps its recent
// changes (one ReminderRefreshInterval long: by then every owner has
// listed them) and, whenever its view moves the bucket of one to a silo it
// has not told, tells that silo too. Once its view has caught up, the
// owner in the up-to-date view has been told: it applied the notice, or
// it refused it and took the bucket afterwards, and a silo lists a bucket
// when it takes it, after the write.
//
// A delivery that fails before the grain handled it is retried with
// backoff as the same tick; only its bucket's record waits for it. A tick
// the grain refuses because its type does not implement grain.Remindable
// counts as delivered, and the reminder's next ticks back off (see
// refusedTick). A silo
// that stops gracefully keeps its buckets while it shuts down, then lists
// them again, delivers what was due when the listing began, waits for it
// and records exactly that before it leaves, so the silos taking over
// deliver nothing twice.

// reminderServiceType addresses the reminder service of a silo in
// envelopes: a registration tells the owner of the bucket to reload one
// reminder.
const reminderServiceType = "granary.reminders"

// reminderNoticeMethod is the method name of a reminder notice: a name
// reserved for the runtime ('$'), like grain.ReminderMethod.
const reminderNoticeMethod = "$notice"

// reminderNotice is the body of a reminder-service envelope.
type reminderNotice struct {
	Type, Key, Name string
}

type remKey struct {
	id   grain.ID
	name string
}

func (k remKey) bucket() int { return reminder.BucketOf(reminder.Hash(k.id)) }

// sentNotice is a change this silo made to the reminder table, and which
// silo it told about it.
type sentNotice struct {
	at       time.Time // when the table was written
	resolved bool      // version holds
	version  int64     // the view version owner was chosen in
	owner    string    // the silo told last; "" for none
}

// retarget reports whether the owner of the notice's bucket in the view at
// version (ok false: no silo owns it there) is to be told: the view is
// newer than the one the notice was last sent in, and its owner is
// another silo. It then records that this one is told.
func (p *sentNotice) retarget(version int64, owner cluster.SiloInfo, ok bool) bool {
	if p.resolved && p.version >= version {
		return false // sent in this view or a newer one already
	}
	p.resolved, p.version = true, version
	if !ok || owner.SiloID == p.owner {
		return false
	}
	p.owner = owner.SiloID
	return true
}

// remItem is one scheduled reminder of an owned bucket.
type remItem struct {
	e      reminder.Entry
	bucket int
	next   time.Time // due time of the earliest tick not yet delivered
	// retry is when to try a failed delivery again (zero: no failure);
	// failures counts the failures in a row.
	retry    time.Time
	failures int
	idx      int // in the heap; -1 while firing or removed
	firing   bool
	gone     bool // removed while firing

	// refused counts the ticks in a row the grain refused: its type does
	// not implement grain.Remindable (see refusedTick).
	refused int
}

// at is when the item fires next.
func (it *remItem) at() time.Time {
	if it.retry.After(it.next) {
		return it.retry
	}
	return it.next
}

type remHeap []*remItem

func (h remHeap) Len() int           { return len(h) }
func (h remHeap) Less(i, j int) bool { return h[i].at().Before(h[j].at()) }
func (h remHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].idx = i; h[j].idx = j }
func (h *remHeap) Push(x any)        { it := x.(*remItem); it.idx = len(*h); *h = append(*h, it) }
func (h *remHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	it.idx = -1
	return it
}

type reminderService struct {
	s     *Silo
	table reminder.Table
	log   *zap.Logger
	now   func() time.Time
	// view returns the silo's current membership view, fenced whether the
	// silo must not serve, and send delivers a notice to another silo:
	// the silo's own, replaced by tests.
	view   func() *cluster.Snapshot
	fenced func() bool
	send   func(ctx context.Context, to cluster.SiloInfo, k remKey) error

	mu    sync.Mutex
	owned [reminder.Buckets]bool
	// loaded marks the owned buckets listed since they were taken: only
	// those have a progress to record (a bucket whose listing failed has
	// no items, and recording "delivered through now" would skip its
	// ticks).
	loaded [reminder.Buckets]bool
	// notices counts the registration notices applied per bucket, so that
	// a listing knows whether one overtook it.
	notices [reminder.Buckets]uint64
	// listedAt is when the last successful listing of a bucket began. A
	// progress record never passes it: a reminder registered after it,
	// whose notice this silo never got, starts at or after it (as far as
	// silo clocks agree), so no record of ours skips a tick of it for the
	// silo that takes the bucket over after we crash.
	listedAt [reminder.Buckets]time.Time
	items    map[remKey]*remItem
	heap     remHeap
	firing   map[*remItem]time.Time // earliest due time the delivery in flight covers
	// retrying holds the items waiting to retry a failed delivery: their
	// next due time is not delivered, whatever their place in the heap.
	retrying map[*remItem]struct{}
	// sent holds the changes this silo made to the table within the last
	// ReminderRefreshInterval, to tell a new owner of their bucket about
	// them (see renotify).
	sent map[remKey]*sentNotice
	// sentDropped counts the changes not kept in sent: it was full.
	sentDropped uint64
	// sentForgotAt is when forgetSentLocked last scanned sent.
	sentForgotAt time.Time
	// notifying tracks the goroutines of renotify, whose notices
	// noticeCtx bounds: run cancels it when it returns, once the buckets
	// are handed over.
	notifying    sync.WaitGroup
	noticeCtx    context.Context
	noticeCancel context.CancelFunc
	wake         chan struct{}
	sem          chan struct{}  // bounds concurrent deliveries
	wg           sync.WaitGroup // deliveries
	done         chan struct{}  // closed when run has returned
	// ctx bounds the service's table calls and deliveries; Stop cancels
	// it when its time for the hand-over runs out.
	ctx    context.Context
	cancel context.CancelFunc
}

func newReminderService(s *Silo, table reminder.Table) *reminderService {
	ctx, cancel := context.WithCancel(context.Background())
	r := &reminderService{
		ctx: ctx, cancel: cancel,
		s: s, table: table, log: s.log.Named("reminders"), now: time.Now,
		view:     func() *cluster.Snapshot { return s.view.Current() },
		fenced:   s.isFenced,
		items:    make(map[remKey]*remItem),
		firing:   make(map[*remItem]time.Time),
		retrying: make(map[*remItem]struct{}),
		sent:     make(map[remKey]*sentNotice),
		wake:     make(chan struct{}, 1),
		sem:      make(chan struct{}, maxConcurrentTicks),
		done:     make(chan struct{}),
	}
	r.noticeCtx, r.noticeCancel = context.WithCancel(ctx)
	r.send = r.sendNotice
	return r
}

// maxConcurrentTicks bounds the reminder ticks one silo delivers at once.
const maxConcurrentTicks = 256

// bucketOwners returns the silos of snap that own reminder buckets: the
// active ones, and those shutting down. A silo shutting down keeps its
// buckets (and fires their ticks) until it leaves: it hands them over with
// its progress recorded, after its grains are deactivated, instead of when
// it announces the shutdown.
func bucketOwners(snap *cluster.Snapshot) []cluster.SiloInfo {
	owners := snap.Active()
	if len(owners) != len(snap.Silos) {
		owners = make([]cluster.SiloInfo, 0, len(snap.Silos))
		for _, si := range snap.Silos {
			if si.Status == cluster.StatusActive || si.Status == cluster.StatusShuttingDown {
				owners = append(owners, si)
			}
		}
	}
	return owners
}

// ownerAmong returns the silo among owners (see bucketOwners) that owns
// bucket b: the one with the highest rendezvous score.
func ownerAmong(active []cluster.SiloInfo, b int) (cluster.SiloInfo, bool) {
	var best cluster.SiloInfo
	var bestScore uint64
	found := false
	for _, si := range active {
		h := fnv.New64a()
		_, _ = h.Write([]byte(si.SiloID))
		_, _ = h.Write([]byte{0, byte(b)})
		score := mix64(h.Sum64()) // FNV alone gives one silo every bucket
		if !found || score > bestScore || (score == bestScore && si.SiloID < best.SiloID) {
			best, bestScore, found = si, score, true
		}
	}
	return best, found
}

// run is the service's goroutine: it follows the view, fires due ticks and
// saves progress, until stop closes.
//
// At stop it lists its buckets again, delivers the ticks due when the
// listing began (and no later ones), waits for them, and records exactly
// that, so that the silos taking its buckets over start where it stopped:
// nothing it delivered is delivered again. Silo.stop stops it after the grains are deactivated and waits for
// it (done), within its deadline, before leaving the cluster.
func (r *reminderService) run(stop <-chan struct{}) {
	defer close(r.done)
	defer r.notifying.Wait()
	defer r.noticeCancel()
	snap := r.view()
	r.rebalance(snap)
	progress := time.NewTicker(r.s.cfg.ReminderProgressInterval)
	defer progress.Stop()
	refresh := time.NewTicker(r.s.cfg.ReminderRefreshInterval)
	defer refresh.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := r.fireDue(time.Time{})
		timer.Reset(wait)
		select {
		case <-stop:
			// List the buckets again first: a registration whose notice
			// failed while this silo stopped is scheduled here. Then
			// deliver what was due when the listing began, and record
			// exactly that: no tick of a reminder registered after the
			// listing is passed, and none delivered here is again.
			listed := r.now()
			r.relist()
			r.drain(r.s.stopCtx, listed)
			r.wg.Wait()
			r.saveProgress(listed)
			return
		case <-snap.Changed():
			snap = r.view()
			r.viewChanged(snap)
		case <-refresh.C:
			r.forgetSent()
			r.reloadAll()
		case <-progress.C:
			r.saveProgress(time.Time{})
		case <-r.wake:
		case <-timer.C:
		}
	}
}

// viewChanged follows a new view: it tells the buckets' new owners of
// this silo's recent changes (on a goroutine of renotify's), then takes
// and drops buckets.
func (r *reminderService) viewChanged(snap *cluster.Snapshot) {
	r.renotify(snap)
	r.rebalance(snap)
}

// rebalance takes (and loads) the buckets snap assigns to this silo and
// drops the others; it returns the buckets it took. A silo that is fenced
// or not yet in the view owns nothing.
func (r *reminderService) rebalance(snap *cluster.Snapshot) (gained []bool) {
	gained = make([]bool, reminder.Buckets)
	var taken []int
	lost := false
	owners := bucketOwners(snap)
	r.mu.Lock()
	for b := range reminder.Buckets {
		owner, ok := ownerAmong(owners, b)
		mine := ok && owner.SiloID == r.s.id && !r.fenced()
		switch {
		case mine && !r.owned[b]:
			// Owned from now on, before the bucket is listed: a
			// registration notice that arrives meanwhile is applied,
			// not refused (the listing then keeps it as it is).
			r.owned[b] = true
			gained[b] = true
			taken = append(taken, b)
		case !mine && r.owned[b]:
			r.owned[b], r.loaded[b] = false, false
			lost = true
		}
	}
	if lost {
		// One pass over the schedule for every bucket given up.
		for _, it := range r.items {
			if !r.owned[it.bucket] {
				r.removeLocked(it)
			}
		}
	}
	r.mu.Unlock()
	if len(taken) > 0 {
		r.log.Info("taking reminder buckets", zap.Int("buckets", len(taken)), zap.Int("active_silos", len(snap.Active())))
	}
	for _, b := range taken {
		if r.ctx.Err() != nil {
			break // Stop gave up on the hand-over
		}
		if err := r.loadBucket(b); err != nil {
			r.log.Warn("loading reminder bucket failed; retrying at the next refresh", zap.Int("bucket", b), zap.Error(err))
		}
	}
	return gained
}

// loadBucket reads bucket b's progress and reminders and schedules them.
func (r *reminderService) loadBucket(b int) error {
	ctx, cancel := context.WithTimeout(r.ctx, r.s.cfg.DeactivationTimeout)
	defer cancel()
	progress, err := r.table.LoadProgress(ctx, b)
	if err != nil {
		return fmt.Errorf("load progress: %w", err)
	}
	// A registration notice applied while the listing runs may be newer
	// than what the listing saw: list again (a few times at most).
	var entries []reminder.Entry
	var began time.Time
	for attempt := 1; ; attempt++ {
		r.mu.Lock()
		seq := r.notices[b]
		r.mu.Unlock()
		began = r.now()
		if entries, err = r.table.ListBucket(ctx, b); err != nil {
			return fmt.Errorf("list: %w", err)
		}
		r.mu.Lock()
		if r.notices[b] == seq || attempt == 3 {
			break // holding r.mu
		}
		r.mu.Unlock()
	}
	defer r.mu.Unlock()
	if r.loaded[b] {
		// Listed again: an entry found new or changed now was
		// registered after the last listing (its notice was lost);
		// progress recorded since covers none of its ticks.
		progress = time.Time{}
	}
	r.owned[b], r.loaded[b] = true, true
	r.listedAt[b] = began
	listed := make(map[remKey]bool, len(entries))
	for _, e := range entries {
		listed[remKey{e.Grain, e.Name}] = true
		r.upsertLocked(e, progress)
	}
	for k, it := range r.items {
		if it.bucket == b && !listed[k] {
			r.removeLocked(it) // unregistered, and the notice was lost
		}
	}
	r.poke()
	return nil
}

// reloadAll loads owned buckets again (picking up registrations whose
// notice was lost) and retries buckets whose load failed.
func (r *reminderService) reloadAll() {
	gained := r.rebalance(r.view()) // loaded just now
	r.relistExcept(gained)
}

// relist lists every owned bucket again.
func (r *reminderService) relist() { r.relistExcept(nil) }

func (r *reminderService) relistExcept(skip []bool) {
	var owned []int
	r.mu.Lock()
	for b := range reminder.Buckets {
		if r.owned[b] && (skip == nil || !skip[b]) {
			owned = append(owned, b)
		}
	}
	r.mu.Unlock()
	for _, b := range owned {
		if err := r.loadBucket(b); err != nil {
			r.log.Warn("reloading reminder bucket failed", zap.Int("bucket", b), zap.Error(err))
		}
	}
}

// upsertLocked schedules e, keeping the schedule of an unchanged entry.
// Ticks due at or before progress were delivered already.
func (r *reminderService) upsertLocked(e reminder.Entry, progress time.Time) {
	k := remKey{e.Grain, e.Name}
	if it := r.items[k]; it != nil {
		if it.e.Start.Equal(e.Start) && it.e.Period == e.Period {
			return
		}
		r.removeLocked(it)
	}
	it := &remItem{e: e, bucket: reminder.BucketOf(reminder.Hash(e.Grain)), idx: -1}
	it.next = e.Start
	if !progress.IsZero() && !it.next.After(progress) {
		// Skip the ticks already delivered.
		k := progress.Sub(e.Start)/e.Period + 1
		it.next = e.Start.Add(k * e.Period)
	}
	r.items[k] = it
	heap.Push(&r.heap, it)
}

func (r *reminderService) removeLocked(it *remItem) {
	delete(r.items, remKey{it.e.Grain, it.e.Name})
	delete(r.retrying, it)
	if it.idx >= 0 {
		heap.Remove(&r.heap, it.idx)
	}
	if it.firing {
		it.gone = true
	}
}

func (r *reminderService) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// drain delivers the ticks due by until, and waits for them, until ctx
// ends. Then a progress record through until covers every tick this silo
// delivered, and no tick it did not.
func (r *reminderService) drain(ctx context.Context, until time.Time) {
	for {
		r.fireDue(until)
		r.mu.Lock()
		idle := len(r.firing) == 0 && (len(r.heap) == 0 || r.heap[0].at().After(until))
		r.mu.Unlock()
		if idle {
			return
		}
		select {
		case <-r.wake:
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return
		}
	}
}

// fireDue starts delivering every due tick (due by until, if not zero)
// and returns how long to wait for the next one.
func (r *reminderService) fireDue(until time.Time) time.Duration {
	for {
		r.mu.Lock()
		if len(r.heap) == 0 {
			r.mu.Unlock()
			return time.Hour
		}
		now := r.now()
		horizon := now
		if !until.IsZero() && until.Before(now) {
			horizon = until
		}
		it := r.heap[0]
		if wait := it.at().Sub(horizon); wait > 0 {
			r.mu.Unlock()
			return wait
		}
		select {
		case r.sem <- struct{}{}:
		default:
			r.mu.Unlock()
			return 10 * time.Millisecond // every delivery slot is busy
		}
		heap.Pop(&r.heap)
		// Fold the ticks that are already past into one late tick (a
		// retried tick folds the ticks that came due meanwhile).
		missed := int(now.Sub(it.next) / it.e.Period)
		due := it.next.Add(time.Duration(missed) * it.e.Period)
		it.firing = true
		r.firing[it] = it.next // the earliest tick this delivery accounts for
		r.mu.Unlock()
		if missed > 0 && it.failures == 0 { // a retry logs its failures
			r.log.Warn("reminder ticks missed; firing once, late",
				zap.Stringer("grain", it.e.Grain), zap.String("reminder", it.e.Name),
				zap.Int("missed", missed), zap.Time("due", due))
		}
		r.wg.Add(1)
		go r.deliver(it, grain.Tick{Name: it.e.Name, Due: due, Period: it.e.Period, Missed: missed})
	}
}

// deliver calls the grain with one tick, then schedules the next.
func (r *reminderService) deliver(it *remItem, tick grain.Tick) {
	defer r.wg.Done()
	defer func() { <-r.sem }()
	ctx, cancel := context.WithTimeout(r.ctx, r.s.cfg.ResponseTimeout)
	defer cancel()
	typ := &grain.TypeDesc{Name: it.e.Grain.Type}
	if t := r.s.types[it.e.Grain.Type]; t != nil {
		typ = t.desc // hosted here: no descriptor to resolve the tick against
	}
	_, err := r.s.Invoke(ctx, &grain.Call{Target: it.e.Grain, Type: typ, Method: typ.Lookup(grain.ReminderMethod), Args: &tick})
	retry := err != nil && undelivered(err)
	refused := err != nil && refusedTick(err)
	r.mu.Lock()
	delete(r.firing, it)
	it.firing = false
	switch {
	case retry:
		it.failures++
		it.retry = r.now().Add(backoff(it.failures, 10*time.Second))
	case refused:
		it.failures, it.retry = 0, time.Time{}
		it.refused++
		it.next = nextTickFrom(it.e, r.now().Add(refusedBackoff(it.refused)), tick.Due.Add(it.e.Period))
	default:
		it.failures, it.retry, it.refused = 0, time.Time{}, 0
		it.next = tick.Due.Add(it.e.Period)
	}
	failures, refusals := it.failures, it.refused
	if !it.gone && r.owned[it.bucket] {
		heap.Push(&r.heap, it)
		if retry {
			r.retrying[it] = struct{}{}
		} else {
			delete(r.retrying, it)
		}
	}
	r.mu.Unlock()
	switch {
	case retry && failures&(failures-1) == 0:
		// Logged at the 1st, 2nd, 4th, 8th... failure in a row: a
		// reminder of a grain type no silo hosts any more retries every
		// 10 s for good, and must not flood the log.
		r.log.Warn("reminder tick not delivered; retrying", zap.Stringer("grain", it.e.Grain),
			zap.String("reminder", tick.Name), zap.Time("due", tick.Due), zap.Int("failures", failures), zap.Error(err))
	case refused && refusals&(refusals-1) == 0:
		// Logged at the 1st, 2nd, 4th... refusal in a row, like a retry.
		r.log.Error("reminder tick refused: the grain type does not implement grain.Remindable; the reminder stays registered, "+
			"its ticks are dropped and back off (up to one every "+maxRefusedBackoff.String()+"); unregister it or implement Remindable",
			zap.Stringer("grain", it.e.Grain), zap.String("grain_type", it.e.Grain.Type), zap.String("reminder", tick.Name),
			zap.Time("due", tick.Due), zap.Int("refusals", refusals), zap.Error(err))
	case refused:
	case err != nil:
		r.log.Error("reminder tick delivered; the grain failed it", zap.Stringer("grain", it.e.Grain),
			zap.String("reminder", tick.Name), zap.Time("due", tick.Due), zap.Error(err))
	}
	r.poke()
}

// undeliveredErrs are the errors of a delivery that may not have reached
// the grain.
var undeliveredErrs = []error{grain.ErrSiloUnavailable, grain.ErrActivationFailed, grain.ErrOverloaded,
	grain.ErrTimeout, grain.ErrOutcomeUnknown, grain.ErrConflict, grain.ErrUnknownGrainType, context.DeadlineExceeded, context.Canceled}

// undelivered reports whether a tick's delivery failed before the grain
// handled it (or may have), so that the tick must be tried again: no silo,
// activation failed, overload, timeout. An error the grain returned, a
// panic, or a grain that takes no reminders counts as delivered.
func undelivered(err error) bool {
	for _, e := range undeliveredErrs {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// refusedTick reports whether a tick's delivery was refused because the
// grain's type does not implement grain.Remindable: a reminder registered
// before the type changed (RegisterReminder refuses such types). The tick
// did not run. Such a reminder is not unregistered: the type may be
// Remindable again, or on other silos during a rolling upgrade, and the
// table is the grain's own durable data. Its ticks count as delivered
// (they hold no bucket's progress back) and are dropped, and the next one
// is delivered no sooner than refusedBackoff later, so that a stale
// reminder neither floods the log nor activates its grain every period;
// the first tick the grain accepts ends the backoff.
func refusedTick(err error) bool {
	return errors.Is(err, grain.ErrUnknownMethod) && grain.OutcomeOf(err) == grain.OutcomeNotRun
}

// maxRefusedBackoff bounds the delay between refused reminder ticks.
const maxRefusedBackoff = 10 * time.Minute

// refusedBackoff is the delay before the tick after the nth refused one in
// a row: 1 s doubling to maxRefusedBackoff (less when the period is longer
// anyway).
func refusedBackoff(n int) time.Duration {
	return min(time.Second<<min(n-1, 20), maxRefusedBackoff)
}

// nextTickFrom returns the due time of e's first tick at or after t, but
// not before next.
func nextTickFrom(e reminder.Entry, t, next time.Time) time.Time {
	if !next.Before(t) {
		return next
	}
	k := (t.Sub(e.Start) + e.Period - 1) / e.Period
	return e.Start.Add(k * e.Period)
}

// saveProgress records for each loaded bucket that every tick due before
// its earliest undelivered one (and before limit, if not zero) was
// delivered.
func (r *reminderService) saveProgress(limit time.Time) {
	if r.fenced() {
		return
	}
	r.mu.Lock()
	// The heap's first item fires first, so nothing before it is
	// undelivered but the ticks in flight and the items retrying a failed
	// delivery. Those hold back only their own bucket's record (rounded
	// down to progressGrain, so that the buckets share a few records):
	// the other buckets' records pass them, so that a silo taking those
	// over does not deliver again what this one delivered since.
	through := r.now()
	if !limit.IsZero() && limit.Before(through) {
		through = limit
	}
	if len(r.heap) > 0 && r.heap[0].at().Before(through) {
		through = r.heap[0].at()
	}
	held := map[int]time.Time{}
	hold := func(b int, t time.Time) {
		if cur, ok := held[b]; !ok || t.Before(cur) {
			held[b] = t
		}
	}
	for it, t := range r.firing {
		hold(it.bucket, t)
	}
	for it := range r.retrying {
		hold(it.bucket, it.next)
	}
	groups := map[int64][]int{} // through (Unix ns) -> buckets
	for b := range reminder.Buckets {
		if !r.owned[b] || !r.loaded[b] {
			continue
		}
		t := through
		if h, ok := held[b]; ok && h.Before(t) {
			t = h.Truncate(progressGrain)
		}
		if l := r.listedAt[b]; l.Before(t) {
			t = l.Truncate(progressGrain)
		}
		groups[t.UnixNano()] = append(groups[t.UnixNano()], b)
	}
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.ctx, r.s.cfg.ReminderProgressInterval*5)
	defer cancel()
	for t, buckets := range groups {
		if err := r.table.SaveProgress(ctx, buckets, time.Unix(0, t-1)); err != nil {
			r.log.Warn("saving reminder progress failed", zap.Ints("buckets", buckets), zap.Error(err))
		}
	}
}

// progressGrain rounds the progress of buckets with ticks in flight.
const progressGrain = 100 * time.Millisecond

// refreshOne reloads one reminder after a registration changed it. It
// refuses with grain.ErrSiloUnavailable ("not owner") unless this silo
// owns the bucket in the view it last followed (rebalance): a silo that
// refuses and takes the bucket later lists it then, after the change, and
// one that applies the notice and gives the bucket up and takes it back
// lists it again. (Refusing when only the view, newer than the last
// rebalance, says "not mine" would be wrong: the view may give the bucket
// back before rebalance sees it, and then nothing lists it.)
func (r *reminderService) refreshOne(ctx context.Context, id grain.ID, name string) error {
	e, ok, err := r.table.Get(ctx, id, name)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	b := reminder.BucketOf(reminder.Hash(id))
	if !r.owned[b] {
		return fmt.Errorf("%w: reminder bucket %d is not owned by silo %s", grain.ErrSiloUnavailable, b, r.s.id)
	}
	r.notices[b]++
	if it := r.items[remKey{id, name}]; it != nil && !ok {
		r.removeLocked(it)
	}
	if ok {
		r.upsertLocked(e, time.Time{})
	}
	r.poke()
	return nil
}

// notify tells the owner of id's bucket to reload reminder name, which
// this silo just changed in the table, and keeps the change to tell a new
// owner of the bucket too, should this silo's view move the bucket within
// the next ReminderRefreshInterval (see renotify). A notice that cannot
// be delivered is picked up by the owner's next refresh.
func (r *reminderService) notify(ctx context.Context, id grain.ID, name string) {
	k := remKey{id, name}
	p := &sentNotice{at: r.now()}
	r.mu.Lock()
	if _, known := r.sent[k]; !known && len(r.sent) >= maxSentNotices && r.now().Sub(r.sentForgotAt) >= time.Second {
		r.forgetSentLocked() // a scan of the map: at most once a second while it is full
	}
	_, known := r.sent[k]
	kept := known || len(r.sent) < maxSentNotices
	if kept {
		r.sent[k] = p // a later change replaces an earlier one
	} else {
		// More changes in one refresh interval than the bound: this one
		// is told to the owner of its bucket now, and a new owner learns
		// of it at its next refresh at the latest.
		r.sentDropped++
	}
	r.mu.Unlock()
	// Until the view stops moving under it: renotify takes the views that
	// come after.
	for {
		snap := r.view()
		owner, ok := ownerAmong(bucketOwners(snap), k.bucket())
		r.mu.Lock()
		tell := (!kept || r.sent[k] == p) && p.retarget(snap.Version, owner, ok)
		r.mu.Unlock()
		if !tell {
			return
		}
		r.tell(ctx, k, owner)
	}
}

// renotify tells the owners snap gives the buckets of this silo's recent
// changes about those they have not been told of: the view moved the
// bucket since the change was last sent. It runs when the view changes,
// before rebalance; the notices go out on a goroutine of their own.
func (r *reminderService) renotify(snap *cluster.Snapshot) {
	type notice struct {
		k  remKey
		to cluster.SiloInfo
	}
	var out []notice
	owners := bucketOwners(snap)
	var owner [reminder.Buckets]cluster.SiloInfo
	var resolved, found [reminder.Buckets]bool
	r.mu.Lock()
	r.forgetSentLocked()
	for k, p := range r.sent {
		b := k.bucket()
		if !resolved[b] {
			owner[b], found[b] = ownerAmong(owners, b)
			resolved[b] = true
		}
		if p.retarget(snap.Version, owner[b], found[b]) {
			out = append(out, notice{k, owner[b]})
		}
	}
	r.mu.Unlock()
	if len(out) == 0 {
		return
	}
	r.log.Info("reminder buckets moved: telling their new owners of recent registrations",
		zap.Int("reminders", len(out)), zap.Int64("view_version", snap.Version))
	r.notifying.Add(1)
	go func() {
		defer r.notifying.Done()
		var wg sync.WaitGroup
		sem := make(chan struct{}, maxConcurrentNotices)
		for _, n := range out {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				ctx, cancel := context.WithTimeout(r.noticeCtx, r.s.cfg.ResponseTimeout)
				defer cancel()
				r.tell(ctx, n.k, n.to)
			})
		}
		wg.Wait()
	}()
}

// maxConcurrentNotices bounds the notices renotify sends at once.
const maxConcurrentNotices = 16

// maxSentNotices bounds how many recent changes a silo keeps to tell a new
// owner of their bucket (about 150 bytes each). A variable for tests.
var maxSentNotices = 100_000

// forgetSent drops the changes older than ReminderRefreshInterval: the
// owners of their buckets have listed them since.
func (r *reminderService) forgetSent() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forgetSentLocked()
}

func (r *reminderService) forgetSentLocked() {
	r.sentForgotAt = r.now()
	cutoff := r.sentForgotAt.Add(-r.s.cfg.ReminderRefreshInterval)
	for k, p := range r.sent {
		if p.at.Before(cutoff) {
			delete(r.sent, k)
		}
	}
}

// tell sends the notice of k to silo to (this silo included).
func (r *reminderService) tell(ctx context.Context, k remKey, to cluster.SiloInfo) {
	var err error
	if to.SiloID == r.s.id {
		err = r.refreshOne(ctx, k.id, k.name)
	} else {
		err = r.send(ctx, to, k)
	}
	if err != nil {
		r.log.Warn("reminder notice not delivered; sent again if the view moves the bucket, else the owner picks it up at its next refresh",
			zap.Stringer("grain", k.id), zap.String("reminder", k.name), zap.String("owner", to.SiloID), zap.Error(err))
	}
}

// sendNotice delivers the notice of k to another silo.
func (r *reminderService) sendNotice(ctx context.Context, to cluster.SiloInfo, k remKey) error {
	body, err := msgpack.Marshal(&reminderNotice{Type: k.id.Type, Key: k.id.Key, Name: k.name})
	if err != nil {
		return err
	}
	_, err = r.s.tc.Call(ctx, to.Address, &transport.Envelope{
		Target: grain.ID{Type: reminderServiceType, Key: strconv.Itoa(k.bucket())}, Method: reminderNoticeMethod, Body: body})
	return err
}

// handleNotice answers a reminder-service envelope from another silo.
func (r *reminderService) handleNotice(ctx context.Context, req *transport.Envelope) *transport.Envelope {
	n, err := decodeNotice(req.Body)
	if err != nil {
		r.s.logBadRequest(ctx, req, err)
		return transport.NewErrorResponse(err)
	}
	if err := r.refreshOne(ctx, grain.ID{Type: n.Type, Key: n.Key}, n.Name); err != nil {
		return transport.NewErrorResponse(err)
	}
	return transport.NewResponse(nil)
}

// The grain.Context side.

func (c *grainContext) RegisterReminder(ctx context.Context, name string, due, period time.Duration) error {
	a := c.act()
	r := a.silo.reminders
	if a.pool != nil {
		return fmt.Errorf("%w: reminder %q of %s: grain type %s is a stateless worker (grain.StatelessWorker), which has no single activation for a reminder to tick",
			grain.ErrBadRequest, name, a.id, a.typ.desc.Name)
	}
	switch a.remindable.Load() {
	case remindableUnknown:
		return fmt.Errorf("%w: reminder %q of %s: RegisterReminder called before the factory of grain type %s returned; call it from OnActivate or a grain method",
			grain.ErrBadRequest, name, a.id, a.typ.desc.Name)
	case remindableNo:
		// The load above orders the read of impl after build's write.
		return fmt.Errorf("%w: reminder %q of %s: grain type %s must implement grain.Remindable (ReceiveReminder(ctx, grain.Tick) error) to register reminders; %T does not",
			grain.ErrBadRequest, name, a.id, a.typ.desc.Name, a.impl)
	}
	if min := a.silo.cfg.ReminderMinPeriod; period < min {
		return fmt.Errorf("%w: reminder %q of %s: period %v is below the minimum %v", grain.ErrBadRequest, name, a.id, period, min)
	}
	// Fenced like a state write: a turn running past its incarnation's
	// fence must not change the table, and a skipped change is an error.
	ctx, cancel, err := a.unfenced(ctx, fmt.Sprintf("reminder %q not registered", name))
	if err != nil {
		return err
	}
	defer cancel()
	e := reminder.Entry{Grain: a.id, Name: name, Start: r.now().Add(max(due, 0)), Period: period}
	if _, err := r.table.Upsert(ctx, e); err != nil {
		return fmt.Errorf("runtime: register reminder %q of %s: %w", name, a.id, err)
	}
	r.notify(ctx, a.id, name)
	return nil
}

func (c *grainContext) UnregisterReminder(ctx context.Context, name string) error {
	a := c.act()
	r := a.silo.reminders
	ctx, cancel, err := a.unfenced(ctx, fmt.Sprintf("reminder %q not unregistered", name))
	if err != nil {
		return err
	}
	defer cancel()
	removed, err := r.table.Remove(ctx, a.id, name, "")
	if err != nil {
		return fmt.Errorf("runtime: unregister reminder %q of %s: %w", name, a.id, err)
	}
	if !removed {
		return fmt.Errorf("%w: reminder %q of %s", grain.ErrNotFound, name, a.id)
	}
	r.notify(ctx, a.id, name)
	return nil
}

func (c *grainContext) Reminders(ctx context.Context) ([]grain.Reminder, error) {
	a := c.act()
	entries, err := a.silo.reminders.table.ListGrain(ctx, a.id)
	if err != nil {
		return nil, fmt.Errorf("runtime: list reminders of %s: %w", a.id, err)
	}
	out := make([]grain.Reminder, len(entries))
	for i, e := range entries {
		out[i] = grain.Reminder{Name: e.Name, Start: e.Start, Period: e.Period}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
