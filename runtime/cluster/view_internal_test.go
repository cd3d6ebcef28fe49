package cluster

import (
	"testing"
	"time"
)

func TestViewBackoff(t *testing.T) {
	v := &View{cfg: viewConfig{retryMin: 50 * time.Millisecond, retryMax: time.Second}}
	want := []time.Duration{0, 0, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond,
		400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second}
	for fails, w := range want {
		if got := v.backoff(fails); got != w {
			t.Errorf("backoff(%d) = %v, want %v", fails, got, w)
		}
	}
	if got := v.backoff(1 << 20); got != time.Second {
		t.Errorf("backoff after many failures = %v", got)
	}
}
