// Package storage is where grain state is persisted. It defines Provider,
// the small interface every storage backend implements, and the in-memory
// provider; the etcd provider is in package etcdstore and the conformance
// suite every provider must pass is in package storagetest.
//
// A record is one named state of one grain, addressed by Key{GrainType,
// GrainKey, State}. Its value is opaque bytes (the runtime encodes states
// with msgpack); the provider never interprets them.
//
// # Etags
//
// Every record carries an etag, an opaque string the provider issues on
// each successful Write. The contract, which storagetest checks:
//
//   - Read of a missing record returns (nil, "", nil). A record that exists
//     always has a non-empty etag, also when its value is empty.
//   - Write and Clear take the etag the caller last saw: the record's
//     current etag, or "" to mean "there must be no record". Any other etag
//     (stale, from another record, or not an etag this provider could have
//     issued) fails with an error wrapping ErrConflict, and the record is
//     unchanged.
//   - Every successful Write returns a new etag, different from every etag
//     the record had before, also across a Clear: an activation holding an
//     etag from before the Clear can never write over a newer record.
//   - Clear of a missing record with etag "" succeeds (it is idempotent).
//
// This is how a stale (zombie) activation is kept from overwriting newer
// state: its write carries an old etag and fails with ErrConflict, which
// errors.Is matches, also after the error crossed the wire (it is
// grain.ErrConflict).
//
// Providers with a value size limit implement Limiter; a larger write fails
// with an error wrapping ErrTooLarge. Every method honours its context:
// a cancelled or expired context yields an error that wraps ctx.Err().
//
// # Choosing a provider
//
//   - Memory (NewMemory): tests and single-process experiments. Fast, no
//     durability.
//   - etcdstore: the default for a silo on the embedded or an external etcd.
//     Durable and linearizable, but every write is a raft proposal and a
//     value is limited to 1 MiB by default: use it for small states.
//   - runtime/storage/postgres, on PostgreSQL (pgx), for production
//     volumes and sizes.
//
// All of them behave the same as far as the contract above goes, so code
// and tests written against Memory hold on the others.
//
// # Usage
//
//	p := storage.NewMemory()
//	k := storage.Key{GrainType: "bank.Account", GrainKey: "42", State: "balance"}
//
//	data, etag, err := p.Read(ctx, k) // (nil, "", nil): no record yet
//	etag, err = p.Write(ctx, k, []byte("100"), etag)
//
//	// Someone holding the old etag loses:
//	_, err = p.Write(ctx, k, []byte("999"), "")
//	errors.Is(err, storage.ErrConflict) // true
//
//	err = p.Clear(ctx, k, etag)
package storage
