package codegen

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestObserverStubs: a grain interface may use the reference of an
// observer interface of its package before it was ever generated; the
// stand-in that makes that possible is gone when Generate returns, and
// one a killed run left behind is reported as an orphan.
func TestObserverStubs(t *testing.T) {
	tmp := moduleTempDir(t)
	leftover := filepath.Join(tmp, "lobby", "lobby.granarystub1_granary.go")
	writeFiles(t, tmp, map[string]string{"lobby/lobby.go": `package lobby

import "context"

//granary:observer
type Screen interface {
	Show(ctx context.Context, text string) error
}

//granary:grain
type Room interface {
	Join(ctx context.Context, s ScreenRef) error
	Screens(ctx context.Context) ([]ScreenRef, error)
}
`, "lobby/lobby.granarystub1_granary.go": Header + "\n\npackage lobby\n\ntype Junk struct{}\n"})
	files, err := Generate(t.Context(), nil, tmp+"/...")
	if err != nil {
		t.Fatal(err)
	}
	var gotOutput, gotOrphan bool
	for _, f := range files {
		switch {
		case f.Path == filepath.Join(tmp, "lobby", "lobby_granary.go") && !f.Orphan():
			gotOutput = true
			if !strings.Contains(string(f.Content), "type ScreenRef struct{ grain.ObserverRef }") ||
				!strings.Contains(string(f.Content), "func (r RoomRef) Join(ctx context.Context, s ScreenRef) error") {
				t.Errorf("generated file:\n%s", f.Content)
			}
		case f.Path == leftover && f.Orphan():
			gotOrphan = true
		default:
			t.Errorf("unexpected file %s (orphan %v)", f.Path, f.Orphan())
		}
	}
	if !gotOutput || !gotOrphan {
		t.Fatalf("files %v: want lobby_granary.go and the leftover stub as an orphan", files)
	}
	entries, err := os.ReadDir(filepath.Join(tmp, "lobby"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), stubInfix) && filepath.Join(tmp, "lobby", e.Name()) != leftover {
			t.Errorf("stub %s left behind", e.Name())
		}
	}
}
