package hello

import (
	"context"
	"fmt"

	"github.com/granary-rt/granary/grain"
)

// greeterState is what a greeter persists. Fields are stored by name, so
// new fields can be added later without breaking stored records.
type greeterState struct {
	Greetings int64 `msgpack:"greetings"`
}

type greeter struct {
	ctx   grain.Context
	state *grain.State[greeterState]
}

// NewGreeter is the Greeter factory to register with a silo:
//
//	hello.RegisterGreeter(silo, hello.NewGreeter)
func NewGreeter(c grain.Context) Greeter {
	return &greeter{ctx: c, state: grain.NewState[greeterState](c, "greeter")}
}

func (g *greeter) Greet(ctx context.Context, name string) (string, error) {
	g.state.Value.Greetings++
	return fmt.Sprintf("Hello, %s! (greeting #%d from greeter %q)", name, g.state.Value.Greetings, g.ctx.ID().Key), nil
}

func (g *greeter) Count(ctx context.Context) (int64, error) {
	return g.state.Value.Greetings, nil
}
