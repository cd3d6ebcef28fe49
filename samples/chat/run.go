package chat

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/granary-rt/granary/runtime"
)

// line is what a screen shows.
type line struct{ who, from, text string }

// screen is a member's frontend: it hands what the room shows to the
// sample's printer.
type screen struct {
	who string
	out chan<- line
}

func (s *screen) Show(ctx context.Context, from, text string) error {
	select {
	case s.out <- line{s.who, from, text}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run starts a silo on an embedded etcd and two clients, Ada and Grace,
// that join a room through the silo's gateway and chat; then Ada's client
// closes, and the room forgets her screen. It writes what the screens
// show to w. cmd/chat calls it.
func Run(ctx context.Context, w io.Writer) error {
	silo, err := runtime.NewSilo(runtime.Config{})
	if err != nil {
		return err
	}
	RegisterRoom(silo, NewRoom)
	if err := silo.Start(ctx); err != nil {
		return err
	}
	defer silo.Stop(context.Background())

	shown := make(chan line, 16)
	connect := func(who string) (*runtime.Client, error) {
		c, err := runtime.Connect(ctx, runtime.ClientConfig{Gateways: []string{silo.GatewayAddress()}})
		if err != nil {
			return nil, err
		}
		ref, _, err := NewScreenRef(ctx, c, &screen{who: who, out: shown})
		if err == nil {
			err = NewRoomRef(c, "lobby").Join(ctx, who, ref)
		}
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("%s joins: %w", who, err)
		}
		return c, nil
	}
	ada, err := connect("ada")
	if err != nil {
		return err
	}
	defer ada.Close()
	grace, err := connect("grace")
	if err != nil {
		return err
	}
	defer grace.Close()

	// say posts text and prints the n screens that show it, in a fixed
	// order (they show it concurrently).
	say := func(c *runtime.Client, from, text string) error {
		n, err := NewRoomRef(c, "lobby").Say(ctx, from, text)
		if err != nil {
			return fmt.Errorf("%s says %q: %w", from, text, err)
		}
		got := map[string]line{}
		for range n {
			select {
			case l := <-shown:
				got[l.who] = l
			case <-time.After(10 * time.Second):
				return fmt.Errorf("%q was not shown on %d screens", text, n)
			}
		}
		for _, who := range []string{"ada", "grace"} {
			if l, ok := got[who]; ok {
				fmt.Fprintf(w, "[%s's screen] %s: %s\n", who, l.from, l.text)
			}
		}
		return nil
	}
	if err := say(ada, "ada", "hello, Grace"); err != nil {
		return err
	}
	if err := say(grace, "grace", "hi Ada!"); err != nil {
		return err
	}
	ada.Close() // Ada leaves: her screen's connection ends with her client
	// The gateway drops Ada's screen when it sees her connection end (a
	// call accepted just before would be lost with it: observer calls
	// are delivered at most once).
	for deadline := time.Now().Add(10 * time.Second); silo.ObserverCount() != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("the gateway still holds %d screens after Ada left", silo.ObserverCount())
		}
	}
	if err := say(grace, "grace", "Ada?"); err != nil {
		return err
	}
	n, err := NewRoomRef(grace, "lobby").Members(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "the room has %d member screen(s) left\n", n)
	grace.Close()
	return silo.Stop(ctx)
}
