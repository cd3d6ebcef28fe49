package bad

import "context"

//granary:grain
type Directives interface {
	Fast(ctx context.Context) error           //granary:fast
	Args(ctx context.Context) error           //granary:readonly please
	InterleaveArgs(ctx context.Context) error //granary:interleave always
	// Doc comment with a misplaced directive.
	//granary:grain
	Misplaced(ctx context.Context) error
}

//granary:grain name=has/slash
type SlashName interface {
	M(ctx context.Context) error
}

//granary:grain color=blue
type UnknownOption interface {
	M(ctx context.Context) error
}

//granary:readonly
type ReadOnlyType interface {
	M(ctx context.Context) error
}

//granary:grain name=bad.Dup
type DupA interface {
	M(ctx context.Context) error
}

//granary:grain name=bad.Dup
type DupB interface {
	M(ctx context.Context) error
}

// Directives where the generator does not look are errors, not ignored.
//
//granary:grain
type (
	Grouped interface {
		M(ctx context.Context) error
	}
)

//granary:oneway
func NotAType() {}

type Unmarked interface {
	M(ctx context.Context) error //granary:readonly
}
