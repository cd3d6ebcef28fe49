package grain

import (
	"reflect"
	"testing"
	"time"
)

type orderedLeaf struct {
	N    int64
	S    []string
	At   time.Time
	Next *orderedLeaf
}

type withMap struct {
	M map[string]int
}

type withAny struct{ V any }

type nestedMap struct {
	Items []withMap
}

func TestEncodesInOrder(t *testing.T) {
	for _, tc := range []struct {
		t    reflect.Type
		want bool
	}{
		{reflect.TypeFor[int64](), true},
		{reflect.TypeFor[orderedLeaf](), true},
		{reflect.TypeFor[[]orderedLeaf](), true},
		{reflect.TypeFor[map[string]int](), false},
		{reflect.TypeFor[withMap](), false},
		{reflect.TypeFor[*nestedMap](), false},
		{reflect.TypeFor[withAny](), false},
	} {
		if got := encodesInOrder(tc.t); got != tc.want {
			t.Errorf("encodesInOrder(%v) = %v, want %v", tc.t, got, tc.want)
		}
	}
}
