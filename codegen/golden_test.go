package codegen

import (
	"bytes"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "update the .golden files of TestGolden")

// TestGolden generates code for the packages under testdata/golden, in one
// load, and compares every output with the .golden file next to it:
// testdata/golden/greeter/greeter.go is expected to produce
// greeter_granary.go with the content of greeter_granary.go.golden. With
// -update it rewrites the .golden files instead.
func TestGolden(t *testing.T) {
	files, err := Generate(t.Context(), nil, "./testdata/golden/...")
	if err != nil {
		t.Fatal(err)
	}

	want := map[string]bool{} // golden files not yet matched
	err = filepath.WalkDir("testdata/golden", func(path string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(path, ".golden") {
			abs, err := filepath.Abs(path)
			want[abs] = true
			return err
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	for _, f := range files {
		if f.Orphan() {
			t.Errorf("unexpected orphan %s: testdata/golden must not hold generated files", f.Path)
			continue
		}
		if !bytes.HasPrefix(f.Content, []byte(Header+"\n\npackage ")) {
			t.Errorf("%s does not start with the header, a blank line and the package clause", f.Path)
		}
		golden := f.Path + ".golden"
		delete(want, golden)
		if *update {
			if err := os.WriteFile(golden, f.Content, 0o666); err != nil {
				t.Fatal(err)
			}
			continue
		}
		old, err := os.ReadFile(golden)
		if err != nil {
			t.Errorf("%s: %v (run go test -run TestGolden -update)", f.Path, err)
			continue
		}
		if !bytes.Equal(old, f.Content) {
			t.Errorf("%s differs from %s (run go test -run TestGolden -update and review the diff):\n%s",
				f.Path, golden, lineDiff(string(old), string(f.Content)))
		}
	}
	for golden := range want {
		if *update {
			os.Remove(golden)
			continue
		}
		t.Errorf("%s: no file generated", golden)
	}
}

// lineDiff shows the first lines where want and got differ.
func lineDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(wl) || i < len(gl); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return fmt.Sprintf("line %d:\n  want: %s\n  got:  %s", i+1, w, g)
		}
	}
	return "(no line differs)"
}
