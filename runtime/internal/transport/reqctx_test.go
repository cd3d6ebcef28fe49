package transport

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestRequestCtxDeadlineWithoutDone(t *testing.T) {
	c := newRequestCtx(context.Background(), 20*time.Millisecond)
	if err := c.Err(); err != nil {
		t.Fatalf("Err before the deadline = %v", err)
	}
	if dl, ok := c.Deadline(); !ok || time.Until(dl) > 20*time.Millisecond {
		t.Fatalf("Deadline = %v, %v", dl, ok)
	}
	time.Sleep(30 * time.Millisecond)
	if err := c.Err(); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Err after the deadline = %v, want DeadlineExceeded", err)
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("Done asked for after the deadline is not closed")
	}
	if got := context.Cause(c); !errors.Is(got, context.DeadlineExceeded) {
		t.Fatalf("Cause = %v, want DeadlineExceeded", got)
	}
}

func TestRequestCtxDoneFiresAtDeadline(t *testing.T) {
	c := newRequestCtx(context.Background(), 20*time.Millisecond)
	child, cancel := context.WithCancel(c)
	defer cancel()
	select {
	case <-child.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a child of the request context was not cancelled at the deadline")
	}
	if err := child.Err(); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("child Err = %v, want DeadlineExceeded", err)
	}
}

func TestRequestCtxFinishAndParent(t *testing.T) {
	c := newRequestCtx(context.Background(), time.Hour)
	done := c.Done()
	c.finish()
	<-done
	if err := c.Err(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Err after finish = %v, want Canceled", err)
	}

	parent, cancelParent := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
	c = newRequestCtx(parent, time.Hour)
	if c.Value(ctxKey{}) != "v" {
		t.Fatal("values of the stream's context are lost")
	}
	var intKey int // a user's *int key is not the context package's
	if v := newRequestCtx(context.WithValue(parent, &intKey, "i"), time.Hour).Value(&intKey); v != "i" {
		t.Fatalf("value under a user's *int key = %v, want i", v)
	}
	child, cancel := context.WithTimeout(c, time.Hour)
	defer cancel()
	cancelParent()
	select {
	case <-child.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("cancelling the stream's context did not reach a child")
	}
	if err := c.Err(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Err after the stream ended = %v, want Canceled", err)
	}
	c.finish() // a second end is harmless
}

func TestRequestCtxStopAfterFunc(t *testing.T) {
	c := newRequestCtx(context.Background(), time.Hour)
	ran := make(chan struct{}, 1)
	stop := context.AfterFunc(c, func() { ran <- struct{}{} })
	if !stop() {
		t.Fatal("stop of a pending AfterFunc = false")
	}
	c.finish()
	select {
	case <-ran:
		t.Fatal("a stopped AfterFunc ran")
	case <-time.After(20 * time.Millisecond):
	}
}

type ctxKey struct{}
