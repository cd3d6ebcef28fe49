package reqvalues

import (
	"context"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestSetCountsBytes(t *testing.T) {
	ctx := context.Background()
	if v := From(ctx); v.Len() != 0 || v.Bytes() != 0 || v.Map() != nil {
		t.Fatalf("empty context has values %v", v.Map())
	}
	ctx = Set(ctx, "ab", "cde")
	ctx2 := Set(ctx, "ab", "x") // replaces: 2+1 bytes
	ctx2 = Set(ctx2, "k", "")
	if v := From(ctx); v.Len() != 1 || v.Bytes() != 5 {
		t.Fatalf("first: %d values, %d bytes; want 1, 5", v.Len(), v.Bytes())
	}
	if v := From(ctx2); v.Len() != 2 || v.Bytes() != 4 {
		t.Fatalf("second: %d values, %d bytes; want 2, 4", v.Len(), v.Bytes())
	}
	if s, ok := From(ctx).Get("ab"); !ok || s != "cde" {
		t.Fatalf("the parent's value changed to %q", s)
	}
	if With(ctx, nil, 0) != ctx {
		t.Fatal("With of no values made a new context")
	}
	w := With(context.Background(), map[string]string{"a": "b"}, 2)
	if s, _ := From(w).Get("a"); s != "b" || From(w).Bytes() != 2 {
		t.Fatal("With lost its values")
	}
}
