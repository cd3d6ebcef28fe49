package cluster_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/granary-rt/granary/runtime/cluster"
)

// TestViewSkipsHostileRecords: records under silos/ that do not decode
// (nil in a time.Time panicked msgpack; an array header of 2^26 allocated
// 16 MiB) are skipped by the watching view, which keeps serving and sees
// the next valid record.
func TestViewSkipsHostileRecords(t *testing.T) {
	ctx := testCtx(t)
	cli := newClient(t)
	prefix := fmt.Sprintf("/hostile-view-%d/", time.Now().UnixNano())
	// One before the view loads, through the Get path.
	if _, err := cli.Put(ctx, prefix+"silos/bad0", "\x81\xa7started\xc0"); err != nil {
		t.Fatal(err)
	}
	v := watchView(t, cli, prefix)
	for i, val := range []string{
		"\x81\xa7started\xc0",               // {"started": nil}
		"\x81\xa5types\xdd\x04\x00\x00\x00", // {"types": array of 2^26}
		"\x80\x00",                          // a trailing byte
	} {
		if _, err := cli.Put(ctx, fmt.Sprintf("%ssilos/bad%d", prefix, i+1), val); err != nil {
			t.Fatal(err)
		}
	}
	good, err := msgpack.Marshal(&cluster.SiloInfo{SiloID: "good", Address: "127.0.0.1:1", Status: cluster.StatusActive,
		StartedAt: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, prefix+"silos/good", string(good)); err != nil {
		t.Fatal(err)
	}
	s := waitView(t, v, 10*time.Second, "the valid silo", func(s *cluster.Snapshot) bool {
		_, ok := s.Get("good")
		return ok
	})
	for i := range 4 {
		if _, ok := s.Get(fmt.Sprintf("bad%d", i)); ok {
			t.Errorf("view holds undecodable silo bad%d", i)
		}
	}
	if err := v.Err(); err != nil {
		t.Errorf("view Err = %v", err)
	}
}
