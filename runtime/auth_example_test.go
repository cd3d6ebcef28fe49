package runtime_test

import (
	"context"
	"fmt"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
)

// A gateway that takes two bearer tokens; grain code then sees the name
// the token stands for through grain.CallerIdentity.
func ExampleStaticTokens() {
	a := runtime.StaticTokens(map[string]string{"s3cret": "alice", "t0ken": "jobs"})
	id, err := a.Authenticate(context.Background(), runtime.AuthInfo{Token: "s3cret"})
	fmt.Println(id.Name, id.Scheme, err)
	_, err = a.Authenticate(context.Background(), runtime.AuthInfo{Token: "guess"})
	fmt.Println(err)
	// Output:
	// alice token <nil>
	// runtime: the bearer token is not one the gateway accepts
}

// A grain method authorises its caller.
func ExampleAuthenticator_grainSide() {
	withdraw := func(ctx context.Context) error {
		if id, ok := grain.CallerIdentity(ctx); !ok || id.Name != "alice" {
			return fmt.Errorf("%w: only alice withdraws", grain.ErrPermissionDenied)
		}
		return nil
	}
	ctx := grain.WithCallerIdentity(context.Background(), grain.Identity{Name: "mallory", Scheme: runtime.SchemeToken})
	fmt.Println(withdraw(ctx))
	// Output:
	// grain: permission denied: only alice withdraws
}
