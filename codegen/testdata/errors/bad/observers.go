package bad

import "context"

//granary:observer
type BadObserver interface {
	Fine(ctx context.Context, msg string) error
	WithResult(ctx context.Context) (int, error)
	Reads(ctx context.Context) error //granary:readonly
	Mixes(ctx context.Context) error //granary:interleave
	NoContext(msg string) error
	Leaks(ctx context.Context, ch chan int) error
}

//granary:grain
//granary:observer
type Both interface {
	M(ctx context.Context) error
}
