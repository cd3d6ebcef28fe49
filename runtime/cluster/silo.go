package cluster

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/granary-rt/granary/grain/codec"
)

// Status is a silo's lifecycle state as published in etcd. The numeric
// values are stored in etcd and must not change.
type Status uint8

const (
	// StatusJoining: the silo registered and is not serving yet.
	StatusJoining Status = 1
	// StatusActive: the silo serves calls and accepts new activations.
	StatusActive Status = 2
	// StatusShuttingDown: the silo is leaving gracefully. It accepts no new
	// activations and is deactivating the ones it has.
	StatusShuttingDown Status = 3
	// StatusDead is never written to etcd: a dead silo's key vanishes with
	// its lease. The membership view reports silos it saw vanish as Dead.
	StatusDead Status = 4
)

func (s Status) String() string {
	switch s {
	case StatusJoining:
		return "joining"
	case StatusActive:
		return "active"
	case StatusShuttingDown:
		return "shutting-down"
	case StatusDead:
		return "dead"
	}
	return "status(" + strconv.Itoa(int(s)) + ")"
}

// SiloInfo is what a silo publishes about itself under
// <prefix>silos/<silo-id>, msgpack-encoded, attached to its lease.
type SiloInfo struct {
	SiloID         string `msgpack:"id"`
	Address        string `msgpack:"addr"`
	GatewayAddress string `msgpack:"gw"`
	// Incarnation tells this run of the silo from earlier and later ones
	// with the same SiloID: it is the etcd revision at which the silo key
	// was created by Join. It is unique in the cluster, grows with every
	// join, and depends on no clock.
	Incarnation int64    `msgpack:"inc"`
	Status      Status   `msgpack:"status"`
	GrainTypes  []string `msgpack:"types"`
	// StatelessTypes are those of GrainTypes the silo hosts as stateless
	// workers (grain.StatelessWorker): a silo that does not host such a
	// type sends its calls to a silo that does without reading the grain
	// directory (Snapshot.StatelessWorker). Absent in records of silos
	// from before it.
	StatelessTypes []string  `msgpack:"stateless,omitempty"`
	StartedAt      time.Time `msgpack:"started"`
	// Activations is the silo's activation count as it last published it
	// (Member.SetLoad), for least-activations placement.
	Activations int64 `msgpack:"acts"`
	lease       clientv3.LeaseID
}

// Lease returns the etcd lease the silo key is attached to, when the
// SiloInfo came from ListSilos, Member.Info or a membership view; 0
// otherwise.
func (s SiloInfo) Lease() clientv3.LeaseID { return s.lease }

// siloKey returns the key of siloID's registration.
func siloKey(prefix, siloID string) string { return silosPrefix(prefix) + siloID }

// MembershipPrefix returns the key range a cluster's membership occupies,
// <prefix>silos/: every silo registration and nothing else. Reading it is
// all a membership view (WatchView, ListSilos) does, so a process that only
// watches the membership, such as a client, needs nothing but read
// permission on this prefix (etcd's role grant-permission --prefix).
func MembershipPrefix(prefix string) string { return silosPrefix(prefix) }

func silosPrefix(prefix string) string { return prefix + "silos/" }

func encodeSilo(info SiloInfo) (string, error) {
	b, err := msgpack.Marshal(&info)
	if err != nil {
		return "", fmt.Errorf("encode silo info: %w", err)
	}
	return string(b), nil
}

// decodeSilo decodes a silo key read from etcd. The incarnation and lease
// come from the key's metadata, which is authoritative. The watch-based
// membership view decodes its events with it too.
func decodeSilo(kv *mvccpb.KeyValue) (SiloInfo, error) {
	var info SiloInfo
	if err := codec.Unmarshal(kv.Value, &info); err != nil {
		return SiloInfo{}, fmt.Errorf("decode silo info at %q: %w", kv.Key, err)
	}
	info.Incarnation = kv.CreateRevision
	info.lease = clientv3.LeaseID(kv.Lease)
	return info, nil
}

// ListSilos returns the silos registered under prefix, ordered by silo id.
// It reads etcd once; a View (WatchView) keeps an up-to-date copy instead.
func ListSilos(ctx context.Context, cli *clientv3.Client, prefix string) ([]SiloInfo, error) {
	if err := checkPrefix(prefix); err != nil {
		return nil, err
	}
	resp, err := cli.Get(ctx, silosPrefix(prefix), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("cluster: list silos: %w", err)
	}
	silos := make([]SiloInfo, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		info, err := decodeSilo(kv)
		if err != nil {
			return nil, fmt.Errorf("cluster: list silos: %w", err)
		}
		silos = append(silos, info)
	}
	return silos, nil
}
