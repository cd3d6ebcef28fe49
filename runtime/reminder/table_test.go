package reminder_test

import (
	"errors"
	"testing"
	"time"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/reminder"
)

// TestHashIsStable pins Hash to FNV-1a 32 of "type/key" (values checked
// with an independent implementation): the etcd table stores a reminder
// under its bucket, so a different hash would hide every stored reminder.
func TestHashIsStable(t *testing.T) {
	for _, tc := range []struct {
		id     grain.ID
		hash   uint32
		bucket int
	}{
		{grain.ID{Type: "bank.Account", Key: "alice"}, 0xfa6c5cd5, 250},
		{grain.ID{Type: "T", Key: "k"}, 0x053acfbd, 5},
		{grain.ID{Type: "a/b", Key: "c"}, 0x477dfb6b, 71},
		{grain.ID{Type: "ünï", Key: "κλειδί"}, 0xc09f13a1, 192},
	} {
		h := reminder.Hash(tc.id)
		if h != tc.hash || reminder.BucketOf(h) != tc.bucket {
			t.Errorf("Hash(%q) = %#x (bucket %d), want %#x (bucket %d)", tc.id.String(), h, reminder.BucketOf(h), tc.hash, tc.bucket)
		}
	}
	if reminder.BucketOf(0xffffffff) != reminder.Buckets-1 || reminder.BucketOf(0x00ffffff) != 0 {
		t.Error("BucketOf does not take the top 8 bits")
	}
}

func TestValidate(t *testing.T) {
	id := grain.ID{Type: "T", Key: "k"}
	ok := reminder.Entry{Grain: id, Name: "r", Period: time.Nanosecond}
	if err := ok.Validate(); err != nil {
		t.Fatalf("Validate(%+v) = %v", ok, err)
	}
	for _, e := range []reminder.Entry{
		{Grain: grain.ID{Key: "k"}, Name: "r", Period: time.Second},
		{Grain: grain.ID{Type: "T"}, Name: "r", Period: time.Second},
		{Grain: id, Period: time.Second},
		{Grain: id, Name: "r"},
		{Grain: id, Name: "r", Period: -1},
	} {
		if err := e.Validate(); !errors.Is(err, reminder.ErrInvalid) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalid", e, err)
		}
	}
}
