package grain_test

import (
	"context"
	"fmt"

	"github.com/granary-rt/granary/grain"
)

func ExampleWithRequestValue() {
	// A caller (a client, a grain, code in a silo's process) sets values
	// on the context of its calls...
	ctx := grain.WithRequestValue(context.Background(), "tenant", "acme")
	ctx = grain.WithRequestValue(ctx, "trace", "4bf92f3577b34da6")

	// ...and every grain the call reaches reads them from the context its
	// method received.
	tenant, ok := grain.RequestValue(ctx, "tenant")
	fmt.Println(tenant, ok, len(grain.RequestValues(ctx)))
	// Output: acme true 2
}
