package transport_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/internal/transport"
)

// A server answers requests through a Handler; a client calls it by
// address. Errors cross the wire with their code.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	h := transport.HandlerFunc(func(ctx context.Context, req *transport.Envelope, reply transport.Replier) {
		// A runtime would queue the call and reply later, from the
		// activation's goroutine.
		switch req.Method {
		case "Greet":
			reply.Reply(transport.NewResponse([]byte("hello, " + req.Target.Key)))
		default:
			reply.Reply(transport.NewErrorResponse(fmt.Errorf("mailbox full: %w", grain.ErrOverloaded)))
		}
	})
	srv, err := transport.NewServer(transport.ServerConfig{}, h)
	if err != nil {
		panic(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() {
		srv.Stop(ctx)
		<-served
	}()

	c, err := transport.NewClient(transport.ClientConfig{})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	target := grain.ID{Type: "demo.Greeter", Key: "ann"}
	resp, err := c.Call(ctx, lis.Addr().String(), &transport.Envelope{Target: target, Method: "Greet"})
	if err != nil {
		panic(err)
	}
	fmt.Println(string(resp.Body))

	_, err = c.Call(ctx, lis.Addr().String(), &transport.Envelope{Target: target, Method: "Deposit"})
	fmt.Println(err, errors.Is(err, grain.ErrOverloaded))
	// Output:
	// hello, ann
	// mailbox full: grain: overloaded true
}
