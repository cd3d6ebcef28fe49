//go:build !granary_brokenfencing

package cluster

import "time"

// brokenFencingSlack is added to every fence deadline. It is zero except
// in builds with the granary_brokenfencing tag, which the fault-injection
// test (runtime/internal/chaos) uses to show that its checker catches a
// silo that keeps serving after its lease is gone.
const brokenFencingSlack time.Duration = 0
