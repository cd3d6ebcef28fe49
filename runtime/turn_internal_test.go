package runtime

import (
	"slices"
	"strings"
	"testing"

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
