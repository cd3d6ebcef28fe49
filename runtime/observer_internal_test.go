package runtime

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/zap"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/internal/transport"
)

type countingObserver struct{ n atomic.Int64 }

func (o *countingObserver) Ping(context.Context, string) error { o.n.Add(1); return nil }

type pingObserver interface {
	Ping(context.Context, string) error
}

var pingObserverType = grain.NewType("test.PingObserver", grain.NewAction1("Ping", pingObserver.Ping, grain.OneWay))

// TestClientRefusesPushesItCannotRun: what a gateway pushes to a client
// for an observer it does not have (never made, deleted, made through
// another gateway), for another type, with a bad method or arguments, is
// dropped without a panic; a good call runs.
func TestClientRefusesPushesItCannotRun(t *testing.T) {
	c := &Client{log: zap.NewNop()}
	tab := c.observers()
	obj := &countingObserver{}
	r := &observerRunner{typ: pingObserverType, obj: obj, log: c.log, wg: &tab.wg}
	tab.byKey["k"] = &clientObserver{gateway: "gw:1", runner: r, handle: &observerHandle{done: make(chan struct{})}}
	md := &pingObserverType.Methods[0]
	args, _ := msgpack.Marshal(&grain.Args1[string]{V0: "hi"})
	env := func(key, method string, fp uint64, typ string, body []byte) *transport.Envelope {
		return &transport.Envelope{Kind: transport.KindOneWay, Target: grain.ID{Type: observerService, Key: key}, Method: method,
			Fingerprint: fp, Context: map[string]string{observerTypeKey: typ}, Body: body}
	}
	for _, e := range []struct {
		addr string
		env  *transport.Envelope
	}{
		{"gw:1", env("unknown", md.Name, md.Fingerprint, pingObserverType.Name, args)},
		{"gw:2", env("k", md.Name, md.Fingerprint, pingObserverType.Name, args)},
		{"gw:1", env("k", md.Name, md.Fingerprint, "other.Type", args)},
		{"gw:1", env("k", "Nope", md.Fingerprint, pingObserverType.Name, args)},
		{"gw:1", env("k", md.Name, md.Fingerprint+1, pingObserverType.Name, args)},
		{"gw:1", env("k", md.Name, md.Fingerprint, pingObserverType.Name, []byte{0xc1})},
		{"gw:1", &transport.Envelope{Kind: transport.KindOneWay, Target: grain.ID{Type: "bank.Account", Key: "k"}, Method: "Deposit"}},
	} {
		c.onPush(e.addr, e.env)
	}
	c.onPush("gw:1", env("k", md.Name, md.Fingerprint, pingObserverType.Name, args))
	deadline := time.Now().Add(5 * time.Second)
	for obj.n.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the good call ran %d times, want 1", obj.n.Load())
		}
		time.Sleep(time.Millisecond)
	}
	r.stop()
	c.onPush("gw:1", env("k", md.Name, md.Fingerprint, pingObserverType.Name, args))
	tab.wg.Wait()
	if n := obj.n.Load(); n != 1 {
		t.Fatalf("%d calls ran, want only the good one (a deleted observer runs nothing)", n)
	}
}

// TestObserverQueueBounded: at most ObserverQueueSize calls wait for a
// local observer; beyond that enqueue fails with ErrOverloaded, and after
// stop with ErrObserverGone.
func TestObserverQueueBounded(t *testing.T) {
	var wg sync.WaitGroup
	block := make(chan struct{})
	obj := &blockingObserver{block: block}
	r := &observerRunner{typ: pingObserverType, obj: obj, log: zap.NewNop(), wg: &wg}
	md := &pingObserverType.Methods[0]
	var err error
	n := 0
	for ; n < ObserverQueueSize+2; n++ {
		if err = r.enqueue(observerCall{md: md, args: &grain.Args1[string]{V0: "x"}}); err != nil {
			break
		}
	}
	// One call is running (taken off the queue) or about to be.
	if !errors.Is(err, grain.ErrOverloaded) || n < ObserverQueueSize || n > ObserverQueueSize+1 {
		t.Fatalf("enqueue %d: %v; want ErrOverloaded after %d", n, err, ObserverQueueSize)
	}
	r.stop()
	if err := r.enqueue(observerCall{md: md, args: &grain.Args1[string]{V0: "x"}}); !errors.Is(err, grain.ErrObserverGone) {
		t.Fatalf("enqueue after stop: %v", err)
	}
	close(block)
	wg.Wait()
	if got := obj.n.Load(); got > 1 {
		t.Fatalf("%d calls ran after stop dropped the queue, want at most the one running", got)
	}
}

type blockingObserver struct {
	block chan struct{}
	n     atomic.Int64
}

func (o *blockingObserver) Ping(context.Context, string) error {
	<-o.block
	o.n.Add(1)
	return nil
}
