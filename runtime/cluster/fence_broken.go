//go:build granary_brokenfencing

package cluster

import "time"

// brokenFencingSlack, in this deliberately broken build, moves every
// fence deadline an hour past the lease: a silo cut off from etcd keeps
// serving its activations long after etcd expired its lease and another
// silo took its grains over. Only the fault-injection test
// (runtime/internal/chaos) builds with the granary_brokenfencing tag, to
// show that its checker catches the result; never ship such a build.
const brokenFencingSlack = time.Hour
