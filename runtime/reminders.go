package runtime

import (
	"container/heap"
	"context"
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
	"github.com/granary-rt/granary/runtime/reminder"
	"github.com/granary-rt/granary/runtime/transport"
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
// Progress: every ProgressInterval the owner records in the table that
// every tick due before the earliest tick it has not yet delivered was
// delivered. A silo that takes a bucket over (its owner died or left)
// starts from that record: a tick due after it that is already past fires
// once, at once, with Tick.Missed counting the ticks folded into it. Around
// an ownership change a tick can fire twice (at least once, not exactly
// once); it is never silently lost.

// reminderServiceType addresses the reminder service of a silo in
// envelopes: a registration tells the owner of the bucket to reload one
// reminder.
const reminderServiceType = "granary.reminders"

// reminderNotice is the body of a reminder-service envelope.
type reminderNotice struct {
	Type, Key, Name string
}

type remKey struct {
	id   grain.ID
	name string
}

// remItem is one scheduled reminder of an owned bucket.
type remItem struct {
	e      reminder.Entry
	bucket int
	next   time.Time // due time of the next tick to fire
	idx    int       // in the heap; -1 while firing or removed
	firing bool
	gone   bool // removed while firing
}

type remHeap []*remItem

func (h remHeap) Len() int           { return len(h) }
func (h remHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
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

	mu     sync.Mutex
	owned  [reminder.Buckets]bool
	items  map[remKey]*remItem
	heap   remHeap
	firing map[*remItem]time.Time // due time of the tick being delivered
	wake   chan struct{}
	sem    chan struct{} // bounds concurrent deliveries
	wg     sync.WaitGroup
}

func newReminderService(s *Silo, table reminder.Table) *reminderService {
	return &reminderService{
		s: s, table: table, log: s.log.Named("reminders"), now: time.Now,
		items:  make(map[remKey]*remItem),
		firing: make(map[*remItem]time.Time),
		wake:   make(chan struct{}, 1),
		sem:    make(chan struct{}, maxConcurrentTicks),
	}
}

// maxConcurrentTicks bounds the reminder ticks one silo delivers at once.
const maxConcurrentTicks = 256

// bucketOwner returns the silo that owns bucket b in snap: the active silo
// with the highest rendezvous score.
func bucketOwner(snap *cluster.Snapshot, b int) (cluster.SiloInfo, bool) {
	var best cluster.SiloInfo
	var bestScore uint64
	found := false
	for _, si := range snap.Active() {
		h := fnv.New64a()
		_, _ = h.Write([]byte(si.SiloID))
		_, _ = h.Write([]byte{byte(b)})
		score := h.Sum64()
		if !found || score > bestScore || (score == bestScore && si.SiloID < best.SiloID) {
			best, bestScore, found = si, score, true
		}
	}
	return best, found
}

// run is the service's goroutine: it follows the view, fires due ticks and
// saves progress, until stop closes.
func (r *reminderService) run(stop <-chan struct{}) {
	defer r.wg.Wait()
	snap := r.s.view.Current()
	r.rebalance(snap)
	progress := time.NewTicker(r.s.cfg.ReminderProgressInterval)
	defer progress.Stop()
	refresh := time.NewTicker(r.s.cfg.ReminderRefreshInterval)
	defer refresh.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := r.fireDue()
		timer.Reset(wait)
		select {
		case <-stop:
			r.saveProgress()
			return
		case <-snap.Changed():
			snap = r.s.view.Current()
			r.rebalance(snap)
		case <-refresh.C:
			r.reloadAll()
		case <-progress.C:
			r.saveProgress()
		case <-r.wake:
		case <-timer.C:
		}
	}
}

// rebalance takes (and loads) the buckets snap assigns to this silo and
// drops the others; it returns the buckets it took. A silo that is fenced
// or not yet in the view owns nothing.
func (r *reminderService) rebalance(snap *cluster.Snapshot) (gained []bool) {
	gained = make([]bool, reminder.Buckets)
	var taken []int
	lost := false
	r.mu.Lock()
	for b := range reminder.Buckets {
		owner, ok := bucketOwner(snap, b)
		mine := ok && owner.SiloID == r.s.id && !r.s.isFenced()
		switch {
		case mine && !r.owned[b]:
			// Owned from now on, before the bucket is listed: a
			// registration notice that arrives meanwhile is applied,
			// not refused (the listing then keeps it as it is).
			r.owned[b] = true
			gained[b] = true
			taken = append(taken, b)
		case !mine && r.owned[b]:
			r.owned[b] = false
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
		if err := r.loadBucket(b); err != nil {
			r.log.Warn("loading reminder bucket failed; retrying at the next refresh", zap.Int("bucket", b), zap.Error(err))
		}
	}
	return gained
}

// loadBucket reads bucket b's progress and reminders and schedules them.
func (r *reminderService) loadBucket(b int) error {
	ctx, cancel := context.WithTimeout(context.Background(), r.s.cfg.DeactivationTimeout)
	defer cancel()
	progress, err := r.table.LoadProgress(ctx, b)
	if err != nil {
		return fmt.Errorf("load progress: %w", err)
	}
	entries, err := r.table.ListBucket(ctx, b)
	if err != nil {
		return fmt.Errorf("list: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.owned[b] = true
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
	gained := r.rebalance(r.s.view.Current()) // loaded just now
	var owned []int
	r.mu.Lock()
	for b := range reminder.Buckets {
		if r.owned[b] && !gained[b] {
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

// fireDue starts delivering every due tick and returns how long to wait
// for the next one.
func (r *reminderService) fireDue() time.Duration {
	for {
		r.mu.Lock()
		if len(r.heap) == 0 {
			r.mu.Unlock()
			return time.Hour
		}
		now := r.now()
		it := r.heap[0]
		if wait := it.next.Sub(now); wait > 0 {
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
		// Fold the ticks that are already past into one late tick.
		missed := int(now.Sub(it.next) / it.e.Period)
		due := it.next.Add(time.Duration(missed) * it.e.Period)
		it.firing = true
		r.firing[it] = due
		r.mu.Unlock()
		if missed > 0 {
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
	ctx, cancel := context.WithTimeout(context.Background(), r.s.cfg.ResponseTimeout)
	defer cancel()
	_, err := r.s.Invoke(ctx, &grain.Call{Target: it.e.Grain, Type: &grain.TypeDesc{Name: it.e.Grain.Type},
		Method: grain.ReminderMethod, Args: &tick})
	if err != nil {
		r.log.Warn("reminder tick failed", zap.Stringer("grain", it.e.Grain), zap.String("reminder", tick.Name),
			zap.Time("due", tick.Due), zap.Error(err))
	}
	r.mu.Lock()
	delete(r.firing, it)
	it.firing = false
	if !it.gone && r.owned[it.bucket] {
		it.next = tick.Due.Add(it.e.Period)
		heap.Push(&r.heap, it)
	}
	r.mu.Unlock()
	r.poke()
}

// saveProgress records for the owned buckets that every tick due before the
// earliest undelivered one was delivered.
func (r *reminderService) saveProgress() {
	if r.s.isFenced() {
		return
	}
	r.mu.Lock()
	through := r.now()
	if len(r.heap) > 0 && r.heap[0].next.Before(through) {
		through = r.heap[0].next
	}
	for _, due := range r.firing {
		if due.Before(through) {
			through = due
		}
	}
	through = through.Add(-time.Nanosecond)
	var owned []int
	for b := range reminder.Buckets {
		if r.owned[b] {
			owned = append(owned, b)
		}
	}
	r.mu.Unlock()
	if len(owned) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.s.cfg.ReminderProgressInterval*5)
	defer cancel()
	if err := r.table.SaveProgress(ctx, owned, through); err != nil {
		r.log.Warn("saving reminder progress failed", zap.Error(err))
	}
}

// refreshOne reloads one reminder after a registration changed it.
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
	if it := r.items[remKey{id, name}]; it != nil && !ok {
		r.removeLocked(it)
	}
	if ok {
		r.upsertLocked(e, time.Time{})
	}
	r.poke()
	return nil
}

// notify tells the owner of id's bucket to reload reminder name. A notice
// that cannot be delivered is picked up by the owner's next refresh.
func (r *reminderService) notify(ctx context.Context, id grain.ID, name string) {
	b := reminder.BucketOf(reminder.Hash(id))
	owner, ok := bucketOwner(r.s.view.Current(), b)
	if !ok {
		return
	}
	var err error
	if owner.SiloID == r.s.id {
		err = r.refreshOne(ctx, id, name)
	} else {
		body, merr := msgpack.Marshal(&reminderNotice{Type: id.Type, Key: id.Key, Name: name})
		if merr != nil {
			err = merr
		} else {
			_, err = r.s.tc.Call(ctx, owner.Address, &transport.Envelope{
				Target: grain.ID{Type: reminderServiceType, Key: strconv.Itoa(b)}, Body: body})
		}
	}
	if err != nil {
		r.log.Debug("reminder notice not delivered; the owner picks it up at its next refresh",
			zap.Stringer("grain", id), zap.String("reminder", name), zap.String("owner", owner.SiloID), zap.Error(err))
	}
}

// handleNotice answers a reminder-service envelope from another silo.
func (r *reminderService) handleNotice(ctx context.Context, req *transport.Envelope) *transport.Envelope {
	var n reminderNotice
	if err := msgpack.Unmarshal(req.Body, &n); err != nil {
		return transport.NewErrorResponse(fmt.Errorf("%w: reminder notice: %w", grain.ErrBadRequest, err))
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
	if min := a.silo.cfg.ReminderMinPeriod; period < min {
		return fmt.Errorf("%w: reminder %q of %s: period %v is below the minimum %v", grain.ErrBadRequest, name, a.id, period, min)
	}
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
