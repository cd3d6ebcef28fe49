// Package etcdstore is a storage.Provider that keeps grain state in etcd:
// the embedded server of a development silo or an external cluster. It is
// meant for small states (1 MiB per value by default); every write is a
// raft proposal.
//
// Each record is one etcd key,
//
//	<Prefix>state/<GrainType>/<GrainKey>/<State>
//
// with every component escaped with url.PathEscape, so a component that
// contains "/" cannot collide with another key. The etag is the key's
// ModRevision in decimal. A write is one transaction that compares the
// ModRevision (or, for etag "", that the key does not exist) and puts the
// value; a read is one linearizable get. Each call is one round trip.
//
//	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
//	...
//	p, err := etcdstore.New(cli, etcdstore.Config{Prefix: "/granary/prod/"})
//	...
//	etag, err := p.Write(ctx, k, data, etag)
//
// Every call is bounded by its context only: etcd's client retries an
// unreachable cluster until the context ends, so give contexts a deadline.
package etcdstore
