package chat_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/granary-rt/granary/samples/chat"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := chat.Run(ctx, &out); err != nil {
		t.Fatal(err)
	}
	want := `[ada's screen] ada: hello, Grace
[grace's screen] ada: hello, Grace
[ada's screen] grace: hi Ada!
[grace's screen] grace: hi Ada!
[grace's screen] grace: Ada?
the room has 1 member screen(s) left
`
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}
