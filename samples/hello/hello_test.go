package hello_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/runtimetest"
	"github.com/granary-rt/granary/samples/hello"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := hello.Run(ctx, &out); err != nil {
		t.Fatal(err)
	}
	want := `Hello, Ada! (greeting #1 from greeter "lobby")
Hello, Grace! (greeting #2 from greeter "lobby")
Hello, Barbara! (greeting #3 from greeter "lobby")
greeter "lobby" has given 3 greetings
`
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestGreetingCountSurvivesDeactivation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := runtimetest.NewCluster(t, 1, runtimetest.Options{
		Config:   runtime.Config{CollectionAge: 10 * time.Millisecond},
		Register: func(s *runtime.Silo) { hello.RegisterGreeter(s, hello.NewGreeter) },
	})
	g := hello.NewGreeterRef(c.Client(), "door")
	if _, err := g.Greet(ctx, "Ada"); err != nil {
		t.Fatal(err)
	}
	runtimetest.Eventually(t, 5*time.Second, func() bool { return c.Silos[0].ActivationCount() == 0 },
		"greeter not deactivated")
	if n, err := g.Count(ctx); err != nil || n != 1 {
		t.Fatalf("Count after reactivation = %d, %v; want 1", n, err)
	}
}
