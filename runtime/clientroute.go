package runtime

import (
	"fmt"
	"math/rand/v2"
	"sync/atomic"

	"github.com/granary-rt/granary/directory"
	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/cluster"
)

// How a client chooses where a call goes. A client sends calls only to
// gateways: those of the membership view's active silos (their records'
// gateway addresses), or the static ClientConfig.Gateways. The first call
// to a grain goes to a gateway chosen round robin; that gateway serves it
// if the grain is active there, forwards it if the grain is being placed
// on another silo, and otherwise answers with the gateway address of the
// silo hosting the grain, which the client follows. The client remembers
// the gateway that answered (a directory.Cache of ClientConfig.RouteCacheSize), so later calls to the grain go
// straight to the gateway of its host: one hop (after a placement
// elsewhere, the forwarding gateway redirects the second call to the
// host's). A hint that turns out wrong (the grain moved, the silo left)
// is dropped and the call routed again.

// gatewayPicker chooses a gateway for a call that has no hint: round
// robin from a random start, over the static list or the view's gateways.
type gatewayPicker struct {
	static []string
	view   *cluster.View
	next   atomic.Uint64
}

func (p *gatewayPicker) pick() (string, error) {
	n := p.next.Add(1)
	if n == 1 {
		n = p.next.Add(uint64(rand.IntN(1 << 16)))
	}
	if len(p.static) > 0 {
		return p.static[n%uint64(len(p.static))], nil
	}
	gws := p.view.Current().Gateways()
	// Records are any string their silo wrote: skip an unusable one.
	for i := range len(gws) {
		if gw := gws[(n+uint64(i))%uint64(len(gws))].GatewayAddress; validAddress(gw) {
			return gw, nil
		}
	}
	return "", fmt.Errorf("%w: no gateway: the cluster's membership lists no active silo with a gateway address", grain.ErrSiloUnavailable)
}

// clientRoute is where a client's call to id goes: the gateway its hint
// names, or one the picker chooses.
func clientRoute(h *directory.Cache, p *gatewayPicker, id grain.ID) (route, error) {
	if e, ok := h.Get(id); ok {
		return route{silo: cluster.SiloInfo{SiloID: e.SiloID, Address: e.Address}, hinted: true}, nil
	}
	gw, err := p.pick()
	if err != nil {
		return route{}, err
	}
	return route{silo: cluster.SiloInfo{Address: gw}}, nil
}
