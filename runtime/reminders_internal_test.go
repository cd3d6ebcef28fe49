package runtime

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/zap"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/cluster"
	"github.com/granary-rt/granary/runtime/internal/transport"
	"github.com/granary-rt/granary/runtime/reminder"
)

// Reminder buckets spread over the silos (silo ids as NewSilo makes them:
// a common prefix and a few random hex digits), and a silo leaving moves
// only the buckets it owned.
func TestBucketOwnersSpread(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 20 {
		var active []cluster.SiloInfo
		for range 3 {
			active = append(active, cluster.SiloInfo{SiloID: fmt.Sprintf("silo-%012x", rng.Uint64()>>16)})
		}
		counts := map[string]int{}
		for b := range reminder.Buckets {
			owner, ok := ownerAmong(active, b)
			if !ok {
				t.Fatal("no owner with three active silos")
			}
			counts[owner.SiloID]++
			after, _ := ownerAmong(active[:2], b)
			if owner.SiloID != active[2].SiloID && after.SiloID != owner.SiloID {
				t.Fatalf("trial %d: bucket %d moved from %s to %s when another silo left", trial, b, owner.SiloID, after.SiloID)
			}
		}
		for _, si := range active {
			if n := counts[si.SiloID]; n < 50 {
				t.Fatalf("trial %d: buckets per silo %v: %s owns %d of %d", trial, counts, si.SiloID, n, reminder.Buckets)
			}
		}
	}
}

// A tick is tried again when it did not reach the grain (or may not have);
// a grain's own failure, or a grain that takes no reminders, counts as
// delivered.
func TestUndeliveredTicks(t *testing.T) {
	for _, err := range []error{grain.ErrSiloUnavailable, grain.ErrActivationFailed, grain.ErrOverloaded,
		grain.ErrTimeout, fmt.Errorf("call: %w", grain.ErrUnknownGrainType), grain.ErrOutcomeUnknown} {
		if !undelivered(err) {
			t.Errorf("undelivered(%v) = false, want a retry", err)
		}
	}
	for _, err := range []error{errors.New("grain says no"), grain.ErrPanic, grain.ErrUnknownMethod, grain.ErrBadRequest} {
		if undelivered(err) {
			t.Errorf("undelivered(%v) = true, want it counted as delivered", err)
		}
	}
}

// A tick is refused when the grain's type does not implement
// grain.Remindable (the runtime says so without running anything, also
// from another silo); a grain's own error that happens to wrap
// ErrUnknownMethod is the grain's failure, not a refusal.
func TestRefusedTicks(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("%w: reminder tick for t/k: grain type t does not implement grain.Remindable", grain.ErrUnknownMethod), true},
		{&grain.RemoteError{Code: grain.CodeOf(grain.ErrUnknownMethod), Message: "not remindable", Outcome: grain.OutcomeNotRun}, true},
		{&grain.RemoteError{Code: grain.CodeOf(grain.ErrUnknownMethod), Message: "not remindable"}, true},
		{grain.WithOutcome(fmt.Errorf("my call: %w", grain.ErrUnknownMethod), grain.OutcomeFailed), false},
		{grain.ErrBadRequest, false},
		{grain.ErrSiloUnavailable, false},
		{errors.New("grain says no"), false},
	} {
		if got := refusedTick(tc.err); got != tc.want {
			t.Errorf("refusedTick(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// After a refused tick the next one is the first tick of the schedule at
// or after the backoff, which doubles from 1 s to maxRefusedBackoff.
func TestRefusedTickBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second, 10: 512 * time.Second, 11: maxRefusedBackoff, 1000: maxRefusedBackoff} {
		if got := refusedBackoff(n); got != want {
			t.Errorf("refusedBackoff(%d) = %v, want %v", n, got, want)
		}
	}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e := reminder.Entry{Start: start, Period: 100 * time.Millisecond}
	for _, tc := range []struct {
		t, next, want time.Duration // from start
	}{
		{t: time.Second, next: 100 * time.Millisecond, want: time.Second},
		{t: 1050 * time.Millisecond, next: 100 * time.Millisecond, want: 1100 * time.Millisecond},
		{t: time.Second, next: 2 * time.Second, want: 2 * time.Second}, // a long period: the next tick anyway
	} {
		if got := nextTickFrom(e, start.Add(tc.t), start.Add(tc.next)).Sub(start); got != tc.want {
			t.Errorf("nextTickFrom(start+%v, next start+%v) = start+%v, want start+%v", tc.t, tc.next, got, tc.want)
		}
	}
}

// remNet is a few reminder services on one table, each with a view the
// test sets, that send each other notices through handleNotice.
type remNet struct {
	table *reminder.Memory
	silos map[string]*reminderService
	views map[string]*atomic.Pointer[cluster.Snapshot]
	sent  atomic.Int64 // notices sent between silos
}

func newRemNet(t *testing.T, ids ...string) *remNet {
	n := &remNet{table: reminder.NewMemory(), silos: map[string]*reminderService{}, views: map[string]*atomic.Pointer[cluster.Snapshot]{}}
	for _, id := range ids {
		s := &Silo{id: id, log: zap.NewNop(), cfg: Config{
			ReminderRefreshInterval: time.Minute, DeactivationTimeout: 10 * time.Second, ResponseTimeout: 10 * time.Second}}
		r := newReminderService(s, n.table)
		view := new(atomic.Pointer[cluster.Snapshot])
		view.Store(&cluster.Snapshot{})
		r.view = view.Load
		r.fenced = func() bool { return false }
		r.send = func(ctx context.Context, to cluster.SiloInfo, k remKey) error {
			n.sent.Add(1)
			body, err := msgpack.Marshal(&reminderNotice{Type: k.id.Type, Key: k.id.Key, Name: k.name})
			if err != nil {
				return err
			}
			return n.silos[to.SiloID].handleNotice(ctx, &transport.Envelope{
				Target: grain.ID{Type: reminderServiceType, Key: strconv.Itoa(k.bucket())}, Method: reminderNoticeMethod, Body: body}).Err()
		}
		t.Cleanup(func() { r.notifying.Wait() })
		n.silos[id], n.views[id] = r, view
	}
	return n
}

// move installs snap as silo id's view, as its reminder service's run
// loop does, and waits for the notices that sends.
func (n *remNet) move(id string, snap *cluster.Snapshot) {
	r := n.silos[id]
	n.views[id].Store(snap)
	r.viewChanged(snap)
	r.notifying.Wait()
}

func (n *remNet) knows(id string, k remKey) bool {
	r := n.silos[id]
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.items[k] != nil
}

// A reminder registered while a silo joins reaches the owner of its bucket
// in the up-to-date view, once the views have caught up, although that
// owner listed the bucket before the write and the notice went to a silo
// whose view was behind: the registering silo tells the new owner when its
// view moves the bucket. This is the interleaving of a failing
// TestRemindersTakenOverAfterKillNine at start-up: the silo that hosted a
// grain, 90 ms behind, applied the grain's registration notice for a
// bucket the joined silo had taken and listed; the joined silo did not
// know the reminder until its next refresh, a minute later.
func TestReminderNoticeFollowsTheBucket(t *testing.T) {
	a := cluster.SiloInfo{SiloID: "silo-a", Address: "a:1", Status: cluster.StatusActive}
	b := cluster.SiloInfo{SiloID: "silo-b", Address: "b:1", Status: cluster.StatusActive}
	c := cluster.SiloInfo{SiloID: "silo-c", Address: "c:1", Status: cluster.StatusActive}
	old := &cluster.Snapshot{Version: 10, Silos: []cluster.SiloInfo{a, b}}
	cur := &cluster.Snapshot{Version: 11, Silos: []cluster.SiloInfo{a, b, c}}
	// A grain whose bucket silo-a owns before silo-c joins and silo-c
	// after.
	var id grain.ID
	for i := 0; ; i++ {
		id = grain.ID{Type: "clock", Key: fmt.Sprint("r", i)}
		bk := reminder.BucketOf(reminder.Hash(id))
		before, _ := ownerAmong(bucketOwners(old), bk)
		after, _ := ownerAmong(bucketOwners(cur), bk)
		if before.SiloID == a.SiloID && after.SiloID == c.SiloID {
			break
		}
	}
	k := remKey{id, "beat"}
	for _, tc := range []struct {
		name       string
		sender     string
		senderView *cluster.Snapshot
		aView      *cluster.Snapshot // the view of the silo told (if not the sender)
		wantSent   int64             // notices between silos in all
		// Whether silo-a, and silo-c, know the reminder right after the
		// registration.
		aFirst, cFirst bool
	}{
		// The notice goes to silo-a, which applies it (its view is
		// behind too); silo-c learns it when the sender's view catches up.
		{name: "the sender owns the bucket in its stale view", sender: "silo-a", senderView: old, wantSent: 1, aFirst: true},
		{name: "sender and receiver behind", sender: "silo-b", senderView: old, aView: old, wantSent: 2, aFirst: true},
		// silo-a, ahead, answers "not owner"; silo-b tells silo-c once its
		// view catches up.
		{name: "the receiver is ahead and refuses", sender: "silo-b", senderView: old, aView: cur, wantSent: 2},
		// Views agree: one notice, to silo-c, and none again.
		{name: "views agree", sender: "silo-b", senderView: cur, aView: cur, wantSent: 1, cFirst: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newRemNet(t, a.SiloID, b.SiloID, c.SiloID)
			ctx := t.Context()
			// silo-c has joined: it takes the bucket and lists it, empty.
			n.move(c.SiloID, cur)
			n.move(tc.sender, tc.senderView)
			if tc.sender != a.SiloID {
				n.move(a.SiloID, tc.aView)
			}
			if _, err := n.table.Upsert(ctx, reminder.Entry{Grain: id, Name: k.name, Start: time.Now().Add(time.Hour), Period: time.Second}); err != nil {
				t.Fatal(err)
			}
			n.silos[tc.sender].notify(ctx, id, k.name)
			if got := n.knows(a.SiloID, k); got != tc.aFirst {
				t.Fatalf("right after the registration silo-a knows the reminder: %v, want %v", got, tc.aFirst)
			}
			if got := n.knows(c.SiloID, k); got != tc.cFirst {
				t.Fatalf("right after the registration silo-c knows the reminder: %v, want %v", got, tc.cFirst)
			}
			// The views catch up.
			for _, s := range []string{a.SiloID, b.SiloID} {
				n.move(s, cur)
			}
			if !n.knows(c.SiloID, k) {
				t.Fatal("silo-c, the owner of the reminder's bucket in the up-to-date view, does not know the reminder: it would tick at silo-c's next refresh, a minute on")
			}
			if n.knows(a.SiloID, k) {
				t.Error("silo-a still schedules the reminder of a bucket it no longer owns")
			}
			if got := n.sent.Load(); got != tc.wantSent {
				t.Errorf("%d notices sent between silos, want %d", got, tc.wantSent)
			}
		})
	}
}

// A silo applies a notice for a bucket it owns in the view it last
// followed, even if its newer view, not followed yet, gives the bucket to
// another silo: that view may give the bucket back before the silo
// follows it (views coalesce), and then the silo, which never gave the
// bucket up, would not list it again.
func TestReminderNoticeAppliedByTheOwnerOfItsLastFollowedView(t *testing.T) {
	a := cluster.SiloInfo{SiloID: "silo-a", Address: "a:1", Status: cluster.StatusActive}
	b := cluster.SiloInfo{SiloID: "silo-b", Address: "b:1", Status: cluster.StatusActive}
	c := cluster.SiloInfo{SiloID: "silo-c", Address: "c:1", Status: cluster.StatusActive}
	v1 := &cluster.Snapshot{Version: 10, Silos: []cluster.SiloInfo{a, b}}
	v2 := &cluster.Snapshot{Version: 11, Silos: []cluster.SiloInfo{a, b, c}} // silo-c joined
	v3 := &cluster.Snapshot{Version: 12, Silos: []cluster.SiloInfo{a, b}}    // and left
	var id grain.ID
	for i := 0; ; i++ {
		id = grain.ID{Type: "clock", Key: fmt.Sprint("r", i)}
		bk := reminder.BucketOf(reminder.Hash(id))
		before, _ := ownerAmong(bucketOwners(v1), bk)
		between, _ := ownerAmong(bucketOwners(v2), bk)
		if before.SiloID == a.SiloID && between.SiloID == c.SiloID {
			break
		}
	}
	k := remKey{id, "beat"}
	n := newRemNet(t, a.SiloID, b.SiloID, c.SiloID)
	ctx := t.Context()
	n.move(a.SiloID, v1)
	n.move(b.SiloID, v1)
	n.views[a.SiloID].Store(v2) // not followed yet
	if _, err := n.table.Upsert(ctx, reminder.Entry{Grain: id, Name: k.name, Start: time.Now().Add(time.Hour), Period: time.Second}); err != nil {
		t.Fatal(err)
	}
	n.silos[b.SiloID].notify(ctx, id, k.name)
	// Both views jump to v3, where silo-a owns the bucket as in v1.
	n.move(a.SiloID, v3)
	n.move(b.SiloID, v3)
	if !n.knows(a.SiloID, k) {
		t.Fatal("silo-a, the owner of the reminder's bucket, does not know the reminder")
	}
	if got := n.sent.Load(); got != 1 {
		t.Errorf("%d notices sent between silos, want 1", got)
	}
}

// The changes a silo keeps to tell new bucket owners of are bounded: past
// the bound a change is still told to its bucket's owner once, and only
// that second chance is lost.
func TestReminderSentNoticesAreBounded(t *testing.T) {
	defer func(n int) { maxSentNotices = n }(maxSentNotices)
	maxSentNotices = 2
	a := cluster.SiloInfo{SiloID: "silo-a", Address: "a:1", Status: cluster.StatusActive}
	b := cluster.SiloInfo{SiloID: "silo-b", Address: "b:1", Status: cluster.StatusActive}
	view := &cluster.Snapshot{Version: 1, Silos: []cluster.SiloInfo{a, b}}
	n := newRemNet(t, a.SiloID, b.SiloID)
	n.move(a.SiloID, view)
	n.move(b.SiloID, view)
	ctx := t.Context()
	const changes = 5
	for i := range changes {
		id := grain.ID{Type: "clock", Key: fmt.Sprint("bound-", i)}
		if _, err := n.table.Upsert(ctx, reminder.Entry{Grain: id, Name: "beat", Start: time.Now().Add(time.Hour), Period: time.Second}); err != nil {
			t.Fatal(err)
		}
		n.silos[b.SiloID].notify(ctx, id, "beat")
		owner, _ := ownerAmong(bucketOwners(view), remKey{id, "beat"}.bucket())
		if !n.knows(owner.SiloID, remKey{id, "beat"}) {
			t.Fatalf("change %d: its bucket's owner %s was not told", i, owner.SiloID)
		}
	}
	r := n.silos[b.SiloID]
	r.mu.Lock()
	kept, dropped := len(r.sent), r.sentDropped
	r.mu.Unlock()
	if kept != 2 || dropped != changes-2 {
		t.Fatalf("kept %d changes and dropped %d, want 2 and %d", kept, dropped, changes-2)
	}
}
