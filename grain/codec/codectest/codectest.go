// Package codectest helps test decoders of untrusted bytes: it measures
// what a decode allocates, so a test can hold it to O(input).
package codectest

import (
	"math"
	"runtime"
)

// AllocatedBy returns the bytes f allocates: the least of up to 5 runs,
// stopping at the first within limit. Other goroutines' allocations (an
// embedded etcd in the same test process) count too; the minimum leaves
// them out.
func AllocatedBy(limit uint64, f func()) uint64 {
	least := uint64(math.MaxUint64)
	for range 5 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		least = min(least, after.TotalAlloc-before.TotalAlloc)
		if least <= limit {
			break
		}
	}
	return least
}
