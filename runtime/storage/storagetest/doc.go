// Package storagetest is the conformance suite for storage providers. Every
// storage.Provider must pass Run; a provider's own tests call it with a
// constructor:
//
//	func TestConformance(t *testing.T) {
//		storagetest.Run(t, func(t *testing.T) storage.Provider {
//			return mystore.New(...) // empty, or in a namespace of its own
//		})
//	}
//
// Bench runs the shared read and write benchmarks the same way.
package storagetest
