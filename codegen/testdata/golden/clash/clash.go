// Package clash exercises naming: parameters named like the generated
// code's locals, unnamed parameters, packages with the same name, and
// package-level identifiers named like imported packages.
package clash

import (
	"context"
	stdtime "time"

	"github.com/granary-rt/granary/codegen/testdata/golden/shared/money"
	othermoney "github.com/granary-rt/granary/codegen/testdata/golden/shared/other/money"
)

// time is a package-level identifier: the generated file must import the
// time package under another name.
var time = "noon"

// grain too.
func grain() string { return time }

//granary:grain
type HTTPProxy interface {
	Fetch(c context.Context, r string, res []byte, err int, zero bool) (stdtime.Time, error)
	Convert(_ context.Context, _ money.Price, _ othermoney.Rate) (money.Price, error)
	Rates(ctx context.Context, money []othermoney.Rate, ctx2 stdtime.Duration) (map[string]othermoney.Rate, error)
	Shadow(ctx context.Context, stdtime string, time2 int, money2 bool) (othermoney.Rate, error)
	// Renamed keeps the wire name of the method it was renamed from; its
	// parameter is named like the method's descriptor variable.
	//granary:method name=Moved
	Renamed(ctx context.Context, httpProxyRenamed int) error
}
