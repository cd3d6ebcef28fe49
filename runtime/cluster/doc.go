// Package cluster is silo membership: a silo's registration in etcd, the
// lease that keeps it alive, and self-fencing when that lease can no longer
// be trusted.
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
// writing their state. A fenced member does not come back: the silo must
// rejoin as a new incarnation.
//
// # Leaving
//
// Leave publishes ShuttingDown, stops the keepalive, deletes the silo key
// and revokes the lease. Close stops the keepalive without any of that, as
// a crash would; the registration lingers until etcd expires the lease.
//
// ListSilos reads the registered silos once. A watch-based, versioned
// membership view built on the same keys comes later.
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
//	// Graceful shutdown:
//	_ = m.SetStatus(ctx, cluster.StatusShuttingDown)
//	// ... deactivate and persist every grain, unregister them ...
//	err = m.Leave(ctx)
package cluster
