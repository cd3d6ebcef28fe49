//go:build !granary_never_set

package bad

import "context"

//granary:grain
type Constrained interface {
	M(ctx context.Context) error
}
