package cluster

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestKeeper(t *testing.T) {
	t0 := time.Now()
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	const ttl, margin = 9 * time.Second, 2 * time.Second
	k := newKeeper(t0, ttl, margin)
	if k.deadline != at(7*time.Second) || k.next != at(3*time.Second) {
		t.Fatalf("after grant: deadline %v, next %v; want 7s, 3s", k.deadline.Sub(t0), k.next.Sub(t0))
	}
	if d := k.attemptDeadline(at(3 * time.Second)); d != at(6*time.Second) {
		t.Errorf("attempt deadline %v, want 6s (one interval)", d.Sub(t0))
	}
	if d := k.attemptDeadline(at(5 * time.Second)); d != at(7*time.Second) {
		t.Errorf("attempt deadline %v, want 7s (the fence deadline)", d.Sub(t0))
	}
	// A keepalive sent at 3s and answered later renews from its send time.
	k.renewed(at(3*time.Second), ttl)
	if k.deadline != at(10*time.Second) || k.next != at(6*time.Second) {
		t.Fatalf("after renewal: deadline %v, next %v; want 10s, 6s", k.deadline.Sub(t0), k.next.Sub(t0))
	}
	// Failures retry after 50ms, 100ms, 200ms, ... up to interval/2, never
	// past the deadline.
	now := at(6 * time.Second)
	for i, want := range []time.Duration{50, 100, 200, 400, 800, 1500, 1500} {
		k.failed(now)
		if got := k.next.Sub(now); got != want*time.Millisecond {
			t.Errorf("failure %d: retry after %v, want %v", i+1, got, want*time.Millisecond)
		}
	}
	k.failed(at(9500 * time.Millisecond))
	if k.next != k.deadline {
		t.Errorf("retry at %v, past the deadline %v", k.next.Sub(t0), k.deadline.Sub(t0))
	}
	if k.expired(at(10*time.Second - 1)) {
		t.Error("expired before the deadline")
	}
	if !k.expired(at(10 * time.Second)) {
		t.Error("not expired at the deadline")
	}
	// A success resets the backoff; an older send never moves the deadline
	// back.
	k.renewed(at(1*time.Second), ttl)
	if k.deadline != at(10*time.Second) || k.failures != 0 {
		t.Errorf("a stale renewal moved the deadline to %v", k.deadline.Sub(t0))
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name       string
		cfg        Config
		wantErr    string
		wantTTL    time.Duration
		wantMargin time.Duration
	}{
		{name: "defaults", cfg: Config{Prefix: "/g/"}, wantTTL: 10 * time.Second, wantMargin: 2 * time.Second},
		{name: "ttl rounded up", cfg: Config{Prefix: "/g/", TTL: 1500 * time.Millisecond}, wantTTL: 2 * time.Second, wantMargin: 400 * time.Millisecond},
		{name: "margin kept", cfg: Config{Prefix: "/g/", TTL: 4 * time.Second, FenceMargin: time.Second}, wantTTL: 4 * time.Second, wantMargin: time.Second},
		{name: "no prefix", cfg: Config{}, wantErr: "prefix is empty"},
		{name: "prefix without slash", cfg: Config{Prefix: "/g"}, wantErr: "must end with"},
		{name: "space in silo id", cfg: Config{Prefix: "/g/", SiloID: "a b"}, wantErr: "SiloID"},
		{name: "ttl too short", cfg: Config{Prefix: "/g/", TTL: 999 * time.Millisecond}, wantErr: "below the minimum"},
		{name: "negative ttl", cfg: Config{Prefix: "/g/", TTL: -time.Second}, wantErr: "below the minimum"},
		{name: "negative margin", cfg: Config{Prefix: "/g/", FenceMargin: -1}, wantErr: "negative"},
		{name: "margin half ttl", cfg: Config{Prefix: "/g/", TTL: 4 * time.Second, FenceMargin: 2 * time.Second}, wantErr: "less than TTL/2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			err := cfg.validate()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("validate: %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.TTL != tc.wantTTL || cfg.FenceMargin != tc.wantMargin || cfg.Logger == nil || !strings.HasPrefix(cfg.SiloID, "silo-") {
				t.Errorf("validated %+v", cfg)
			}
		})
	}
}

// fakeLease answers keepalives as its mode says, after a 5ms round trip.
type fakeLease struct {
	mu    sync.Mutex
	mode  string // "ok", "hang", "gone", "fail"
	ttl   int64
	sends []time.Time
}

func (f *fakeLease) set(mode string) {
	f.mu.Lock()
	f.mode = mode
	f.mu.Unlock()
}

func (f *fakeLease) sent(i int) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sends[i]
}

func (f *fakeLease) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sends)
}

func (f *fakeLease) KeepAliveOnce(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
	f.mu.Lock()
	mode := f.mode
	f.sends = append(f.sends, time.Now())
	f.mu.Unlock()
	switch mode {
	case "hang":
		<-ctx.Done()
		return nil, ctx.Err()
	case "gone":
		return nil, rpctypes.ErrLeaseNotFound
	case "fail":
		return nil, errors.New("fake: unavailable")
	}
	select {
	case <-time.After(5 * time.Millisecond):
		return &clientv3.LeaseKeepAliveResponse{ID: id, TTL: f.ttl}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// startFake starts a member over a fake lease with a 9 s TTL and a 2 s
// margin (keepalive every 3 s, deadline 7 s after a send), inside a
// synctest bubble, so time is fake and exact.
func startFake(t *testing.T, logger *zap.Logger) (*Member, *fakeLease) {
	cfg := Config{Prefix: "/g/", SiloID: "s1", TTL: 9 * time.Second, FenceMargin: 2 * time.Second, Logger: logger}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	f := &fakeLease{mode: "ok", ttl: 9}
	k := newKeeper(time.Now(), cfg.TTL, cfg.FenceMargin)
	m := newMember(nil, f, cfg, 1, k, SiloInfo{SiloID: cfg.SiloID})
	go m.run(k)
	t.Cleanup(func() { m.Close() })
	return m, f
}

func TestLoopRenews(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, f := startFake(t, zap.NewNop())
		start := time.Now()
		time.Sleep(60*time.Second + 10*time.Millisecond) // the 60s keepalive answered
		if m.Fenced() {
			t.Fatalf("fenced with a healthy lease: %v", m.Err())
		}
		if n := f.calls(); n != 20 {
			t.Errorf("%d keepalives in 60s, want 20 (every TTL/3)", n)
		}
		if want := start.Add(60*time.Second + 7*time.Second); !m.FenceDeadline().Equal(want) {
			t.Errorf("fence deadline %v after start, want 67s", m.FenceDeadline().Sub(start))
		}
		m.Close()
		if !errors.Is(m.Err(), ErrClosed) {
			t.Errorf("Err after Close = %v", m.Err())
		}
		time.Sleep(time.Until(m.FenceDeadline()) - 1)
		if m.Fenced() {
			t.Error("fenced before the deadline after Close")
		}
		time.Sleep(1)
		if !m.Fenced() {
			t.Error("not fenced at the deadline after Close")
		}
	})
}

// TestLoopFencesAtDeadline: keepalives hang from some point; the member
// fences exactly at send time of the last success + TTL - margin.
func TestLoopFencesAtDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		core, logs := observer.New(zap.InfoLevel)
		m, f := startFake(t, zap.New(core))
		time.Sleep(10 * time.Second) // renewals sent at 3s, 6s, 9s
		f.set("hang")
		deadline := m.FenceDeadline()
		if want := f.sent(2).Add(7 * time.Second); !deadline.Equal(want) {
			t.Fatalf("deadline %v, want last send + 7s", deadline)
		}
		time.Sleep(time.Until(deadline) - 1)
		if m.Fenced() {
			t.Fatal("fenced before the deadline")
		}
		<-m.Done()
		if !time.Now().Equal(deadline) {
			t.Errorf("Done closed %v after the deadline", time.Since(deadline))
		}
		if !m.Fenced() || !errors.Is(m.Err(), ErrFenced) || errors.Is(m.Err(), ErrLeaseLost) {
			t.Errorf("Fenced %v, Err %v", m.Fenced(), m.Err())
		}
		if logs.FilterMessageSnippet("fenced itself").FilterField(zap.String("silo_id", "s1")).Len() != 1 {
			t.Errorf("fencing not logged with the silo id: %v", logs.All())
		}
	})
}

func TestLoopFencesOnLeaseGone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		m, f := startFake(t, zap.NewNop())
		time.Sleep(4 * time.Second)
		f.set("gone")
		<-m.Done()
		if got := time.Since(start); got != 6*time.Second {
			// The next keepalive, at 6s, reports the lease gone.
			t.Errorf("fenced at %v, want 6s", got)
		}
		if !errors.Is(m.Err(), ErrLeaseLost) || !errors.Is(m.Err(), ErrFenced) {
			t.Errorf("Err = %v, want ErrLeaseLost and ErrFenced", m.Err())
		}
	})
}

// TestLoopRetriesQuickly: a keepalive that fails is retried within
// milliseconds, not after another interval, and a later success keeps the
// member alive.
func TestLoopRetriesQuickly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, f := startFake(t, zap.NewNop())
		f.set("fail")
		time.Sleep(3*time.Second + time.Second) // first keepalive at 3s
		n := f.calls()
		// 3s, +50ms, +100ms, +200ms, +400ms: five attempts by 3.75s
		if n != 5 {
			t.Errorf("%d attempts 1s after failures began, want 5", n)
		}
		f.set("ok")
		time.Sleep(5 * time.Second)
		if m.Fenced() {
			t.Fatalf("fenced although a retry succeeded: %v", m.Err())
		}
	})
}

// TestFencedLatches: a keepalive answered before the fence deadline whose
// new deadline is published only after the old one passed (the keepalive
// goroutine was descheduled in between) must not unfence the member: once
// Fenced reads true it stays true for the incarnation, and the member ends
// with ErrFenced instead of carrying on.
func TestFencedLatches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := Config{Prefix: "/g/", SiloID: "s1", TTL: 9 * time.Second, FenceMargin: 2 * time.Second, Logger: zap.NewNop()}
		if err := cfg.validate(); err != nil {
			t.Fatal(err)
		}
		f := &fakeLease{mode: "ok", ttl: 9}
		k := newKeeper(time.Now(), cfg.TTL, cfg.FenceMargin)
		m := newMember(nil, f, cfg, 1, k, SiloInfo{SiloID: cfg.SiloID})
		var seen []bool
		m.beforePublish = func() {
			if seen != nil {
				return
			}
			// The goroutine is held up between the answer and publishing
			// it, until the old deadline has passed; meanwhile a turn
			// checks the fence.
			time.Sleep(time.Until(m.FenceDeadline()))
			seen = append(seen, m.Fenced())
		}
		go m.run(k)
		t.Cleanup(func() { m.Close() })
		time.Sleep(8 * time.Second) // the keepalive sent at 3s was answered at 3.005s, published at 7s
		seen = append(seen, m.Fenced())
		if len(seen) != 2 || !seen[0] || !seen[1] {
			t.Fatalf("Fenced read %v (at the old deadline, then 1s later): it must latch once true", seen)
		}
		select {
		case <-m.Done():
		default:
			t.Fatal("member still live after Fenced read true")
		}
		if !errors.Is(m.Err(), ErrFenced) {
			t.Errorf("Err = %v, want ErrFenced", m.Err())
		}
	})
}
