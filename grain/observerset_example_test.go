package grain_test

import (
	"context"
	"fmt"
	"time"

	"github.com/granary-rt/granary/grain"
)

// A grain's subscribers, notified and forgotten when gone. Here the
// subscribers are names and the notification a function; in a grain they
// are generated observer references, notified with ref.Bind(c).Method.
func ExampleObserverSet() {
	subs := grain.NewObserverSet[string](time.Minute, 0)
	subs.Subscribe("ada")
	subs.Subscribe("grace")
	n, err := subs.Notify(context.Background(), func(ctx context.Context, who string) error {
		if who == "grace" {
			return fmt.Errorf("her client left: %w", grain.ErrObserverGone)
		}
		fmt.Println("notified", who)
		return nil
	})
	fmt.Println(n, err, subs.Subscribers())
	// Output:
	// notified ada
	// 1 <nil> [ada]
}
