package runtime

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/granary-rt/granary/grain"
)

func TestChainRoundTrip(t *testing.T) {
	chain := []link{
		{grain: grain.ID{Type: "lobby.Player", Key: "a/b c"}, method: "Whois", silo: "silo/with/slashes", inc: 42, seq: 7, turn: 3},
		{grain: grain.ID{Type: "lobby.Room", Key: ""}, method: "Roster", silo: "s", inc: 1, seq: 1<<63 + 5, turn: 1},
	}
	got, err := decodeChain(encodeChain(chain))
	if err != nil || !slices.Equal(got, chain) {
		t.Fatalf("round trip: %v, %v; want %v", got, err, chain)
	}
	if s := chainString(chain, grain.ID{Type: "lobby.Player", Key: "a/b c"}, "Profile"); s != "lobby.Player/a/b c.Whois -> lobby.Room/.Roster -> lobby.Player/a/b c.Profile" {
		t.Fatalf("chainString = %q", s)
	}
}

// FuzzDecodeChain: any chain a peer sends decodes or is refused as a bad
// request, never panics, and what decodes encodes back to itself.
func FuzzDecodeChain(f *testing.F) {
	f.Add("test.Hop/a\x00Call\x001/2/3/silo")
	f.Add("test.Hop/a\x00Call\x001/2/3/silo\x00x/y\x00M\x00-1/0/0/s")
	f.Add("a\x00b")
	f.Fuzz(func(t *testing.T, joined string) {
		ss := strings.Split(joined, "\x00")
		chain, err := decodeChain(ss)
		if err != nil {
			if !strings.Contains(err.Error(), grain.ErrBadRequest.Error()) {
				t.Fatalf("error %v is not a bad request", err)
			}
			return
		}
		again, err := decodeChain(encodeChain(chain))
		if err != nil || !slices.Equal(again, chain) {
			t.Fatalf("re-decoding %v: %v, %v", chain, again, err)
		}
	})
}

// TestFanOutCallsDoNotHandOnATokenTheTurnLacks: a turn's calls made from
// several goroutines (a fan-out) can see the count of its calls fall to 0
// while the goroutine of the last one still waits for the token, then rise
// again: that goroutine goes on without the token, and the token stays
// with the turn that holds it.
func TestFanOutCallsDoNotHandOnATokenTheTurnLacks(t *testing.T) {
	a := &activation{status: statusValid, running: true, typ: &grainType{reentrant: true}}
	T := a.initTurn(new(turn), context.Background(), "Fan", false, nil)
	a.beginWait(T) // T fans out: the token is free
	a.mu.Lock()
	a.running = true // R starts
	a.mu.Unlock()
	R := a.initTurn(new(turn), context.Background(), "R", false, nil)
	a.beginWait(R)
	a.mu.Lock()
	a.running = true // U starts and holds the token
	a.mu.Unlock()
	rBack, tBack := make(chan struct{}), make(chan struct{})
	go func() { a.endWait(R); close(rBack) }()
	waitResumers(t, a, 1)
	go func() { a.endWait(T); close(tBack) }() // T's last call so far returned
	waitResumers(t, a, 2)
	a.beginWait(T) // a sibling goroutine of T calls again
	select {
	case <-tBack: // it goes on without the token
	case <-time.After(5 * time.Second):
		t.Fatal("the goroutine whose call returned still waits, though its turn waits again")
	}
	select {
	case <-rBack:
		t.Fatal("R resumed while U still holds the token")
	case <-time.After(50 * time.Millisecond):
	}
	a.releaseToken() // U ends: R continues
	<-rBack
	if !R.holds || T.holds {
		t.Fatalf("R holds %v, T holds %v; want R only", R.holds, T.holds)
	}
	a.endTurn(R)
	a.releaseToken()
	a.endWait(T) // T's fan-out is over: it takes the free token
	if !T.holds || !a.running {
		t.Fatalf("T holds %v, running %v after its calls returned", T.holds, a.running)
	}
}

// TestCallsATurnDidNotWaitForKeepTheTokenRight: a call from a goroutine the
// turn did not wait for, made before or after the turn ended, leaves the
// token with one holder.
func TestCallsATurnDidNotWaitForKeepTheTokenRight(t *testing.T) {
	a := &activation{status: statusValid, running: true, typ: &grainType{}}
	T := a.initTurn(new(turn), context.Background(), "M", false, nil)
	a.endTurn(T) // the method returned; its goroutine calls after that
	a.beginWait(T)
	a.endWait(T)
	if !a.running {
		t.Fatal("a call after its turn ended took the runner's token")
	}
	T2 := a.initTurn(new(turn), context.Background(), "M", false, nil)
	a.beginWait(T2) // a stray goroutine calls while the turn still runs
	if a.running {
		t.Fatal("the token was not given up")
	}
	a.endTurn(T2) // the method returns: the turn takes the token back
	if !a.running || !T2.holds {
		t.Fatalf("running %v, holds %v after the turn ended", a.running, T2.holds)
	}
	a.endWait(T2) // the stray call returns: nothing changes
	if !a.running || len(a.waiting) != 0 || len(a.resumers) != 0 {
		t.Fatalf("running %v, %d waiting, %d resumers", a.running, len(a.waiting), len(a.resumers))
	}
}

func waitResumers(t *testing.T, a *activation, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		a.mu.Lock()
		got := len(a.resumers)
		a.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d resumers, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}
