// Package cluster is silo membership: a silo's registration in etcd, the
// lease that keeps it alive, self-fencing when that lease can no longer be
// trusted, and the watch-based membership view every silo and client keeps.
//
// # Registration
//
// Join grants an etcd lease and writes <prefix>silos/<silo-id>, a
// msgpack-encoded SiloInfo attached to the lease, first with status Joining
// and then Active. The silo's incarnation is the etcd revision at which Join
// created that key: unique in the cluster, larger for every later join,
// independent of any clock. A second live silo with the same id cannot
// join (ErrSiloIDInUse) until the first one's lease ends.
//
// The directory entries of the silo's activations are attached to the same
// lease (Member.LeaseID), so when the lease ends, the silo key and all its
// entries vanish together and other silos may activate its grains.
//
// # Keepalive and self-fencing
//
// A goroutine owned by the Member renews the lease every TTL/3 with a single
// keepalive request and records the monotonic time at which it sent each
// request that succeeded. The fence deadline is
//
//	send time of the last successful keepalive + TTL - FenceMargin
//
// etcd renews the lease when it processes the request, which is after it
// was sent; so, provided this machine's clock and the etcd leader's advance
// at nearly the same rate, etcd cannot expire the lease, and no other silo
// can take over the silo's grains, before deadline + FenceMargin. A failed
// keepalive is retried within tens of milliseconds (doubling up to TTL/6),
// not after another TTL/3.
//
// The member fences itself when the deadline passes without a renewal, or
// at once when etcd reports the lease gone (revoked or expired): Fenced
// reports true, Done closes, Err matches ErrFenced (and ErrLeaseLost in the
// second case), and an error is logged with the silo id. Fenced is also
// true, without waiting for the goroutine, as soon as the clock passes
// FenceDeadline; the runtime checks it before starting a turn and before
// sending a success reply, and on Done drops its activations without
// writing their state. Fencing latches: once Fenced has returned true it
// returns true for ever, even if a keepalive answered before the deadline
// is processed after it (that fences the member too). A fenced member does
// not come back: the silo must rejoin as a new incarnation.
//
// # Leaving
//
// Leave publishes ShuttingDown, stops the keepalive, deletes the silo key
// and revokes the lease. Close stops the keepalive without any of that, as
// a crash would; the registration lingers until etcd expires the lease.
//
// # Rejoining
//
// A fenced member does not come back; the silo process joins again as a
// new incarnation, which always has a larger incarnation number. A new
// silo id can join at once. The same silo id is free once the old key is
// gone: at once after Leave or when etcd reported the lease lost, but
// after fencing by deadline (or Close, or a crash) the old key lingers
// until etcd expires the lease, up to FenceMargin and etcd's expiry check
// after the fence, and a plain Join fails with ErrSiloIDInUse meanwhile.
// Two ways around that, no manual action needed:
//
//   - Member.Rejoin, from the process that held the fenced member, once
//     the runtime stopped serving as that incarnation: it removes the old
//     registration as Leave does (deletes the key, revokes the lease and
//     the directory entries attached to it) and joins with the same
//     Config; if etcd cannot be reached for the cleanup, it waits for the
//     old lease to end instead.
//   - Config.WaitForID, for a restarted process that reuses its silo id:
//     Join waits for an earlier incarnation's key to vanish with its lease,
//     for at most that lease's TTL + 2 s; a key still there by then is
//     renewed by a live silo, and Join fails with ErrSiloIDInUse.
//
// # Membership view
//
// ListSilos reads the registered silos once. WatchView loads them with a
// Get and then watches <prefix>silos/ from the next revision, keeping a
// View: a sequence of immutable Snapshots swapped in atomically, so that
// View.Current takes no lock and does not allocate (routing reads it per
// call). Snapshot.Version is the etcd revision the snapshot reflects and
// grows with every snapshot. Snapshot.Active, Gateways and Hosting(type)
// return active silos, sorted by silo id, precomputed when the snapshot is
// built; Get looks a silo up by id.
//
// Dead silos. A silo whose key vanishes (Leave, lease expired or revoked)
// stays in the snapshots with status Dead for a while (WithDeadRetention:
// default one minute and at most 64 entries, pruned when the view next
// changes), so the runtime can see who died and where it was. Whether an
// incarnation is dead does not depend on that retention: Snapshot.IsDead
// is exact for every incarnation up to Version, because an incarnation is
// the revision that created the silo key, and a key with that create
// revision exists until it is deleted. A late message from any dead
// incarnation, however old, is recognised; no tombstones are kept.
//
// Notifications. Snapshot.Changed returns a channel closed when a newer
// snapshot is installed: any number of waiters, coalescing (a waiter sees
// the newest snapshot), and the watcher never blocks on a slow reader.
// View.WaitFor waits for a condition (say, three active silos).
//
// Failures. The view's goroutine watches with WithRequireLeader, so an
// etcd member cut off from its leader ends the watch instead of going
// silently stale. The etcd client resumes a watch by itself across
// reconnects (an etcd restart with its data is invisible to the view
// except as a delay). When the watch ends anyway (compaction past the
// view's revision, leader loss, a halting error), the view keeps serving
// its last snapshot, reloads with a Get (immediately, then with backoff
// up to 5 s by default, see WithViewRetry, while reloads fail), marks
// silos that vanished meanwhile Dead and watches again; View.Err reports
// the failure until then, and everything is logged. Close (or the end of
// the context given to WatchView, or closing the etcd client) stops the
// goroutine.
//
// # Usage
//
//	m, err := cluster.Join(ctx, cli, cluster.Config{
//		Prefix:     "/granary/prod/",
//		Address:    "10.0.0.7:7000",
//		GrainTypes: []string{"bank.Account"},
//	})
//	if err != nil {
//		return err
//	}
//	go func() {
//		<-m.Done()
//		if errors.Is(m.Err(), cluster.ErrFenced) {
//			// stop serving now: drop activations without writing state
//		}
//	}()
//	...
//	view, err := cluster.WatchView(ctx, cli, "/granary/prod/", cluster.WithViewLogger(log))
//	if err != nil {
//		return err
//	}
//	defer view.Close()
//	targets := view.Current().Hosting("bank.Account") // per call, no lock
//	...
//	// Graceful shutdown:
//	_ = m.SetStatus(ctx, cluster.StatusShuttingDown)
//	// ... deactivate and persist every grain, unregister them ...
//	err = m.Leave(ctx)
package cluster
