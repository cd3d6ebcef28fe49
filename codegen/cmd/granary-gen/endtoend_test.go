package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/granary-rt/granary/codegen"
)

// This is an end-to-end test in the style of stringer's: it builds the
// command, runs it on packages copied into the module, and builds and runs
// a program that uses the generated code.

var (
	binDir string // holds the granary-gen binary; removed after the tests

	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "granary-gen-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// generator returns the path of the granary-gen binary, built once.
func generator(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binPath = filepath.Join(binDir, "granary-gen")
		if runtime.GOOS == "windows" {
			binPath += ".exe"
		}
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// moduleTempDir returns a new directory under codegen/testdata, inside the
// module so that packages in it can import the module's packages, and
// ignored by ./... patterns. It is removed when the test ends.
func moduleTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp(filepath.Join("..", "..", "testdata"), "tmp-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// result is the outcome of a command.
type result struct {
	code           int
	stdout, stderr string
}

// command runs name with args in dir.
func command(t *testing.T, dir, name string, args ...string) result {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if err != nil {
		exitErr, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
		}
		r.code = exitErr.ExitCode()
	}
	return r
}

// mustRun runs name with args in dir and fails the test unless it exits 0.
func mustRun(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	r := command(t, dir, name, args...)
	if r.code != 0 {
		t.Fatalf("%s %s: exit status %d\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// copyTree copies the directory src to dst, replacing old with new in Go
// files (to rewrite import paths).
func copyTree(t *testing.T, src, dst, old, new string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o777)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.HasSuffix(path, ".go") {
			data = bytes.ReplaceAll(data, []byte(old), []byte(new))
		}
		return os.WriteFile(target, data, 0o666)
	})
	if err != nil {
		t.Fatal(err)
	}
}

const testdataPath = "github.com/granary-rt/granary/codegen/testdata/"

// TestEndToEnd runs granary-gen on copies of the e2e and golden packages,
// over stale and broken earlier outputs, then checks its output against
// the golden files, vets everything, and runs a program that calls every
// method of the generated references through a fake remote silo.
func TestEndToEnd(t *testing.T) {
	gen := generator(t)
	tmp := moduleTempDir(t)
	base := filepath.Base(tmp)
	testdata := filepath.Join("..", "..", "testdata")
	copyTree(t, filepath.Join(testdata, "e2e"), filepath.Join(tmp, "e2e"), testdataPath+"e2e/", testdataPath+base+"/e2e/")
	copyTree(t, filepath.Join(testdata, "golden"), filepath.Join(tmp, "golden"), "", "")

	// Earlier outputs: broken, renamed, orphaned.
	bankDir := filepath.Join(tmp, "e2e", "bank")
	stale := map[string]string{
		"account_granary.go": codegen.Header + "\n\npackage bank\n\nfunc {{{\n",
		"ledger_granary.go":  codegen.Header + "\n\npackage oldname\n\nvar LedgerType = 1\n",
		"old_granary.go":     codegen.Header + "\n\npackage bank\n\nvar _ = OldRef{}\n",
	}
	for name, content := range stale {
		if err := os.WriteFile(filepath.Join(bankDir, name), []byte(content), 0o666); err != nil {
			t.Fatal(err)
		}
	}

	out := mustRun(t, tmp, gen, "-v", "./...")
	for _, want := range []string{"wrote e2e/bank/account_granary.go", "wrote e2e/bank/ledger_granary.go", "removed e2e/bank/old_granary.go", "wrote golden/greeter/greeter_granary.go"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("granary-gen -v output lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(bankDir, "old_granary.go")); !os.IsNotExist(err) {
		t.Errorf("orphan old_granary.go not removed (stat: %v)", err)
	}

	// The command writes what the golden files hold.
	goldens, err := filepath.Glob(filepath.Join(tmp, "golden", "*", "*.golden"))
	if err != nil || len(goldens) == 0 {
		t.Fatalf("no golden files copied (%v)", err)
	}
	for _, golden := range goldens {
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(strings.TrimSuffix(golden, ".golden"))
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: granary-gen output differs from the golden file", golden)
		}
	}

	// -check finds nothing to do, then finds an edited file.
	mustRun(t, tmp, gen, "-check", "./...")
	ledger := filepath.Join(bankDir, "ledger_granary.go")
	f, err := os.OpenFile(ledger, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "// edited")
	f.Close()
	r := command(t, tmp, gen, "-check", "./...")
	if want := "e2e/bank/ledger_granary.go: generated file is missing or stale; run granary-gen\n"; r.code != 1 || r.stderr != want {
		t.Errorf("granary-gen -check on an edited file: exit %d, stderr %q; want exit 1, stderr %q", r.code, r.stderr, want)
	}
	mustRun(t, tmp, gen, "./...")

	// Everything generated builds and is vet-clean; the program works.
	mustRun(t, tmp, "go", "vet", "./...")
	got := mustRun(t, tmp, "go", "run", "./e2e/run")
	if got != wantRun {
		t.Errorf("run output:\n%s\nwant:\n%s", got, wantRun)
	}
}

const wantRun = `bank.Account Deposit(bank.Money, string, time.Time) (bank.Money, error) flags=copyfree reply=true
bank.Account Withdraw(bank.Money) (bank.Money, error) flags=copyfree reply=true
bank.Account Balance() (bank.Money, error) flags=readonly|copyfree reply=true
bank.Account History(int) ([]bank.Entry, error) flags=readonly reply=true
bank.Account Statement(map[string]string) (bank.Statement, error) flags=none reply=true
bank.Account Find(*string) (*bank.Entry, error) flags=none reply=true
bank.Account Last() (bank.Entry, error) flags=copyfree reply=true
bank.Account SetOwner(string) error flags=copyfree reply=false
bank.Account Notify(string) error flags=oneway|copyfree reply=false
bank.Account Echo([3]int8, time.Duration, bool, float64, []uint8) ([]uint8, error) flags=none reply=true
bank.Ledger Total([]string) (bank.Money, error) flags=none reply=true
id: bank.Account/alice
deposit: 100
deposit: 150
deposit bob: 7
withdraw: error "withdraw 1000 from bank.Account/alice: bank: insufficient funds" insufficient=true
withdraw: 120
balance: 120
history: [{2026-01-02T03:04:05.000000006Z 100 salary} {2026-01-02T04:04:05.000000006Z 50 gift}]
statement: owner="alice" balance=120 entries=[{2026-01-02T03:04:05.000000006Z 100 salary} {2026-01-02T04:04:05.000000006Z 50 gift} {- -30 withdrawal}] labels=map[branch:north tier:gold] last={- -30 withdrawal}
find gift: {2026-01-02T04:04:05.000000006Z 50 gift}
find nil: <nil>
last: {- -30 withdrawal}
rename: <nil>
renamed: owner="Alice A." labels=map[]
notify: <nil>
echo: [1 -2 3] 1.5s true 2.5 bytes
call Deposit(int64) (int64, error): grain: incompatible method signature: bank.Account.Deposit here is Deposit(bank.Money, string, time.Time) (bank.Money, error) (fingerprint 5ad7c5f395c9057f); the call was made for another signature (fingerprint 3fb5223673615ea9) (incompatible=true unknown=false)
call Rename(string) error: grain: unknown method: bank.Account has no method Rename (incompatible=false unknown=true)
total: 127
notified: hello
`

// TestErrorOutput checks the command's report of invalid grain
// interfaces: one "file:line: message" line per problem on stderr, paths
// relative to the current directory, exit status 1, nothing written.
func TestErrorOutput(t *testing.T) {
	gen := generator(t)
	dir := filepath.Join("..", "..", "testdata", "errors")
	r := command(t, dir, gen, "./bad")
	if r.code != 1 {
		t.Fatalf("exit status %d, want 1; stderr:\n%s", r.code, r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("stdout %q, want nothing", r.stdout)
	}
	line := regexp.MustCompile(`^bad/[a-z]+\.go:[0-9]+: \S.*$`)
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	for _, l := range lines {
		if !line.MatchString(l) {
			t.Errorf("stderr line %q is not file:line: message", l)
		}
	}
	for _, want := range []string{
		"bad/signatures.go:13: Signatures.NoParams: first parameter must be context.Context",
		"bad/signatures.go:26: WireTypes.Chan: parameter c: type chan int cannot cross the wire: chan int is a channel",
	} {
		if !strings.Contains(r.stderr, want+"\n") {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if matches, _ := filepath.Glob(filepath.Join(dir, "bad", "*_granary.go")); len(matches) > 0 {
		t.Errorf("files written despite errors: %v", matches)
	}

	// Usage errors exit 2.
	if r := command(t, dir, gen, "-nosuchflag"); r.code != 2 {
		t.Errorf("unknown flag: exit status %d, want 2", r.code)
	}
}
