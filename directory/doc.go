// Package directory maps a grain id to the one activation of that grain the
// cluster has registered: the silo hosting it, that silo's incarnation and
// the activation's id on the silo.
//
// # Contract
//
// At most one entry per grain id exists at any time, and calls go only to
// the activation it names. Every Directory implementation keeps that
// contract with three operations:
//
//   - Register is "create if absent". It records the given entry unless one
//     exists and returns the registered entry: the caller's own if it won,
//     the existing one if it lost. A silo that loses forwards the call to
//     the winner and drops its would-be activation.
//   - Lookup returns the registered entry, from a local cache if the
//     implementation has one; ok is false when none is registered.
//   - Unregister is conditional: it removes the entry only if it is still
//     the given one, so a deactivating activation never removes the
//     registration of its successor. Removing an entry that is gone or
//     belongs to another activation is not an error.
//
// # Implementations
//
// Etcd keeps each entry in one etcd key,
// <prefix>dir/<PathEscape(type)>/<PathEscape(key)>, holding the
// msgpack-encoded Entry and attached to the hosting silo's lease, so a dead
// silo's entries vanish with its lease. Register is a single transaction
// (if the key was never created, put it with the lease; else read it);
// Unregister is a single transaction (if the value is still ours, delete).
// A directory made with no lease is read-only, as a client's is: its
// Register fails with ErrNoLease.
//
// Concurrent calls share transactions, group-commit style: registrations
// and unregistrations that arrive while a transaction is in etcd go out
// together in the next one (each as a nested transaction with its own
// comparison, so each still wins or loses alone), and so do the lookups
// that miss the cache. A lone call is sent at once. EtcdConfig.MaxBatch
// bounds a transaction (127 operations: etcd's default --max-txn-ops is
// 128, and nested transactions count against it).
//
// Memory implements the same contract in process, for tests and
// single-process setups. ForgetSilo removes a silo's entries the way a
// lease expiry does.
//
// # The cache
//
// Etcd caches entries (DefaultCacheSize of them unless configured,
// evicting with the CLOCK second-chance policy). Register fills the cache
// with the winner, win or lose; a Lookup that finds an entry in etcd fills
// it too; a Lookup that finds nothing caches nothing. A cache hit does not
// touch etcd and does not allocate.
//
// A cached entry is a hint, not the truth: it stays until it is evicted,
// invalidated, or overwritten by a later Register. Unregister drops this
// process's cached entry whatever the outcome, but other processes keep
// theirs. The runtime closes that gap: a silo that receives a call for a
// grain it no longer hosts answers "not here"; the sender calls Invalidate
// for that id and retries once, and the retry's Lookup reads etcd. A
// removal (Invalidate or Unregister) that overtakes a concurrent read is
// never undone by that read filling the cache with what it saw before.
//
// # Usage
//
//	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints})
//	...
//	dir, err := directory.NewEtcd(cli, directory.EtcdConfig{
//		Prefix: "/granary/prod/",
//		Lease:  member.LeaseID(), // the silo's lease, from runtime/cluster
//	})
//	...
//	id := grain.ID{Type: "bank.Account", Key: "alice"}
//	e, ok, err := dir.Lookup(ctx, id)
//	if err == nil && !ok {
//		mine := directory.Entry{SiloID: "silo-a", Address: "10.0.0.7:7000", Incarnation: 42, ActivationID: 1}
//		e, err = dir.Register(ctx, id, mine)
//		// e == mine: activate here. Otherwise: forward to e.Address.
//	}
//	...
//	// On deactivation:
//	err = dir.Unregister(ctx, id, mine)
package directory
