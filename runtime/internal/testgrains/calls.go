package testgrains

import "context"

// Hop calls other grains along a path, for the tests of call chains,
// deadlocks and interleaving. A path entry is a grain id ("test.Hop/a",
// "test.HopReentrant/b", "test.HopChain/c": three registrations of the same
// methods with different reentrancy), "wait:<barrier>", which calls
// Probe.Wait of the barrier's probe, or "panic", which panics.
//
//granary:grain name=test.Hop
type Hop interface {
	// Call calls the first entry of path with the rest, and returns the
	// keys of the grains it passed through, joined by ">".
	Call(ctx context.Context, path []string) (string, error)
	// Read is Call, read-only.
	Read(ctx context.Context, path []string) (string, error) //granary:readonly
	// Peek is Call, marked to interleave.
	Peek(ctx context.Context, path []string) (string, error) //granary:interleave
	// Turns returns how many code segments of this activation ran.
	Turns(ctx context.Context) (int, error)
}

// HopReentrant is Hop, registered as a reentrant type.
//
//granary:grain name=test.HopReentrant
type HopReentrant interface {
	Call(ctx context.Context, path []string) (string, error)
	Read(ctx context.Context, path []string) (string, error) //granary:readonly
	Peek(ctx context.Context, path []string) (string, error) //granary:interleave
	Turns(ctx context.Context) (int, error)
}

// HopChain is Hop, registered with call-chain reentrancy.
//
//granary:grain name=test.HopChain
type HopChain interface {
	Call(ctx context.Context, path []string) (string, error)
	Read(ctx context.Context, path []string) (string, error) //granary:readonly
	Peek(ctx context.Context, path []string) (string, error) //granary:interleave
	Turns(ctx context.Context) (int, error)
}
