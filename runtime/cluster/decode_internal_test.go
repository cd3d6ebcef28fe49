package cluster

import (
	"errors"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/granary-rt/granary/grain/codec"
	"github.com/granary-rt/granary/grain/codec/codectest"
)

// allocatedBy measures what a decode allocates.
var allocatedBy = codectest.AllocatedBy

// hostileSiloRecords are membership records that msgpack panicked on or
// allocated for far beyond their size.
var hostileSiloRecords = map[string][]byte{
	// {"started": nil}: nil into time.Time panics msgpack.
	"nil time": {0x81, 0xa7, 's', 't', 'a', 'r', 't', 'e', 'd', 0xc0},
	// {"types": array of 2^26}: 16 MiB of strings up front.
	"types 2^26": {0x81, 0xa5, 't', 'y', 'p', 'e', 's', 0xdd, 0x04, 0x00, 0x00, 0x00},
	// {"addr": str of 2^32-1 bytes}
	"addr 4 GiB": {0x81, 0xa4, 'a', 'd', 'd', 'r', 0xdb, 0xff, 0xff, 0xff, 0xff},
}

func TestDecodeSiloRejectsHostileRecords(t *testing.T) {
	for name, b := range hostileSiloRecords {
		t.Run(name, func(t *testing.T) {
			var err error
			alloc := allocatedBy(256<<10, func() { _, err = decodeSilo(&mvccpb.KeyValue{Key: []byte("/g/silos/x"), Value: b}) })
			if err == nil {
				t.Fatal("decodeSilo succeeded")
			}
			if alloc > 256<<10 {
				t.Errorf("decodeSilo allocated %d bytes, want < 256 KiB", alloc)
			}
		})
	}
	_, err := decodeSilo(&mvccpb.KeyValue{Key: []byte("/g/silos/x"), Value: []byte{0x80, 0x00}})
	if !errors.Is(err, codec.ErrMalformed) {
		t.Errorf("decodeSilo with a trailing byte = %v, want ErrMalformed", err)
	}
}

func FuzzMembershipRecord(f *testing.F) {
	b, _ := msgpack.Marshal(&SiloInfo{SiloID: "s1", Address: "127.0.0.1:1", GatewayAddress: "127.0.0.1:2", Status: StatusActive,
		GrainTypes: []string{"a.B", "c.D"}, StatelessTypes: []string{"c.D"}, StartedAt: time.Unix(100, 5).UTC(), Activations: 7})
	f.Add(b)
	for _, b := range hostileSiloRecords {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		kv := &mvccpb.KeyValue{Key: []byte("/g/silos/x"), Value: data, CreateRevision: 3}
		limit := uint64(64*len(data) + 64<<10)
		if alloc := allocatedBy(limit, func() { _, _ = decodeSilo(kv) }); alloc > limit {
			t.Fatalf("decoding %d bytes allocated %d, limit %d", len(data), alloc, limit)
		}
	})
}

// A record written by a silo from before gateways (no "gw" key) decodes,
// with no gateway address, and such a silo is not offered as a gateway. A
// gateway address is whatever string its silo wrote: users of it check it
// (runtime's validAddress); one of the wrong type fails the record.
func TestDecodeSiloGatewayAddress(t *testing.T) {
	old, err := msgpack.Marshal(map[string]any{"id": "s1", "addr": "127.0.0.1:1", "status": uint8(StatusActive), "types": []string{"a.B"}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := decodeSilo(&mvccpb.KeyValue{Key: []byte("/g/silos/s1"), Value: old, CreateRevision: 7})
	if err != nil {
		t.Fatalf("record without a gateway address: %v", err)
	}
	if info.GatewayAddress != "" || info.Address != "127.0.0.1:1" || info.Status != StatusActive || info.Incarnation != 7 {
		t.Fatalf("decoded %+v", info)
	}
	v := &View{entries: map[string]viewEntry{"s1": {info: info}}, cfg: viewConfig{deadLimit: 1}}
	v.publish(7, time.Now())
	if s := v.Current(); len(s.Active()) != 1 || len(s.Gateways()) != 0 {
		t.Errorf("active %v, gateways %v: want the silo active and no gateway", s.Active(), s.Gateways())
	}
	wrong, err := msgpack.Marshal(map[string]any{"id": "s1", "gw": 42})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeSilo(&mvccpb.KeyValue{Key: []byte("/g/silos/s1"), Value: wrong}); err == nil {
		t.Error("a record whose gateway address is a number decoded")
	}
	odd, err := msgpack.Marshal(map[string]any{"id": "s1", "gw": "not an address\n"})
	if err != nil {
		t.Fatal(err)
	}
	if info, err := decodeSilo(&mvccpb.KeyValue{Key: []byte("/g/silos/s1"), Value: odd}); err != nil || info.GatewayAddress != "not an address\n" {
		t.Errorf("a record with an odd gateway string: %+v, %v", info, err)
	}
}
