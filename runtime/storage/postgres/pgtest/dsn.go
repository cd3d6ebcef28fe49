package pgtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// EnvDSN names the environment variable that points DSN at a server of
// your own instead of the machine's cluster. Its value is a DSN of a role
// that may create databases; its database is used only to create and drop
// the throwaway ones.
const EnvDSN = "GRANARY_PG_DSN"

// SocketDir is where Debian's PostgreSQL clusters put their Unix sockets.
const SocketDir = "/var/run/postgresql"

const (
	// setupTimeout bounds finding, starting and preparing the server.
	setupTimeout = 2 * time.Minute
	// opTimeout bounds creating or dropping one database.
	opTimeout = 30 * time.Second
	// dbPrefix starts the name of every throwaway database.
	dbPrefix = "granary_test_"
)

// DSN returns the DSN of a new, empty database, dropped when tb's test
// ends. The database lives on the server named by $GRANARY_PG_DSN if it is
// set, and otherwise on this machine's PostgreSQL cluster (Debian's
// postgresql-common layout, as pg_lsclusters shows it): DSN starts the
// cluster if it is down and, when running as root, creates a superuser role
// named after the current OS user so that peer authentication on the Unix
// socket lets the tests in. The setup runs once per test binary and is
// serialized across binaries with a lock file, so packages tested in
// parallel can all call DSN.
//
// A server that cannot be started or reached fails the test: DSN never
// skips it.
func DSN(tb testing.TB) string {
	tb.Helper()
	admin, err := adminDSN()
	if err != nil {
		tb.Fatalf("pgtest: no PostgreSQL server for the test: %v", err)
	}
	name := dbPrefix + randomHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := createDatabase(ctx, admin, name); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if err := exec1(ctx, admin, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			tb.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	dsn, err := withDatabase(admin, name)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	return dsn
}

// adminDSN finds (and if need be starts and prepares) the server once per
// process and returns a DSN that may create databases.
var adminDSN = sync.OnceValues(func() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if dsn := os.Getenv(EnvDSN); dsn != "" {
		if err := ping(ctx, dsn); err != nil {
			return "", fmt.Errorf("$%s: %w", EnvDSN, err)
		}
		return dsn, nil
	}
	return localCluster(ctx)
})

func createDatabase(ctx context.Context, admin, name string) error {
	stmt := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	for {
		err := exec1(ctx, admin, stmt)
		// CREATE DATABASE fails while another session is connected to the
		// template database; such sessions are short (another process's
		// setup), so try again.
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55006" && ctx.Err() == nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if err != nil {
			return fmt.Errorf("create database %s: %w", name, err)
		}
		return nil
	}
}

// withDatabase returns dsn with its database replaced by name.
func withDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("parse $%s as a URL: %w", EnvDSN, err)
		}
		u.Path = "/" + name
		u.RawPath = ""
		return u.String(), nil
	}
	// Keyword/value form: a later setting overrides an earlier one.
	return strings.TrimSpace(dsn + " dbname=" + name), nil
}

// exec1 runs one statement on a connection of its own.
func exec1(ctx context.Context, dsn, stmt string) error {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	_, err = c.Exec(ctx, stmt)
	return err
}

func ping(ctx context.Context, dsn string) error {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	return c.Close(ctx)
}

// cluster is one line of pg_lsclusters.
type cluster struct {
	version, name string
	port          int
	online        bool
	logFile       string
}

// localCluster makes sure the machine's cluster runs and lets the current
// OS user in as a superuser, and returns its admin DSN.
func localCluster(ctx context.Context) (string, error) {
	osUser, err := user.Current()
	if err != nil {
		return "", fmt.Errorf("current OS user: %w", err)
	}
	c, err := findCluster(ctx)
	if err != nil {
		return "", err
	}
	dsn := fmt.Sprintf("host=%s port=%d user=%s dbname=postgres sslmode=disable",
		SocketDir, c.port, quoteValue(osUser.Username))
	if c.online && ping(ctx, dsn) == nil {
		return dsn, nil // the usual case: nothing to do
	}

	// Set up under a machine-wide lock, so concurrent test binaries do not
	// start the cluster or create the role at the same time.
	unlock, err := lockFile(filepath.Join(os.TempDir(), "granary-pgtest.lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if c, err = findCluster(ctx); err != nil {
		return "", err
	}
	if !c.online {
		if err := startCluster(ctx, c); err != nil {
			return "", err
		}
	}
	err = waitReady(ctx, dsn)
	if isAuthError(err) && osUser.Username != "postgres" {
		if os.Geteuid() != 0 {
			return "", fmt.Errorf("cluster %s/%s refuses role %q (%w); as root pgtest creates it, otherwise create it yourself (createuser -s %s) or set $%s",
				c.version, c.name, osUser.Username, err, osUser.Username, EnvDSN)
		}
		if err := createRole(ctx, c, osUser.Username); err != nil {
			return "", err
		}
		err = waitReady(ctx, dsn)
	}
	if err != nil {
		return "", fmt.Errorf("cluster %s/%s on %s port %d: %w", c.version, c.name, SocketDir, c.port, err)
	}
	return dsn, nil
}

// findCluster returns the cluster named "main" of the newest PostgreSQL
// version pg_lsclusters lists, or else the first one listed.
func findCluster(ctx context.Context) (cluster, error) {
	out, err := exec.CommandContext(ctx, "pg_lsclusters", "--no-header").Output()
	if errors.Is(err, exec.ErrNotFound) {
		return cluster{}, errors.New("PostgreSQL is not installed: no pg_lsclusters on $PATH (apt-get install postgresql), and $" + EnvDSN + " is not set")
	}
	if err != nil {
		return cluster{}, fmt.Errorf("pg_lsclusters: %w%s", err, stderrOf(err))
	}
	var all []cluster
	for line := range strings.Lines(string(out)) {
		// Ver Cluster Port Status Owner Data-directory Log-file
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		port, err := strconv.Atoi(f[2])
		if err != nil {
			continue
		}
		c := cluster{version: f[0], name: f[1], port: port, online: strings.HasPrefix(f[3], "online")}
		if len(f) >= 7 {
			c.logFile = f[6]
		}
		all = append(all, c)
	}
	if len(all) == 0 {
		return cluster{}, fmt.Errorf("pg_lsclusters lists no cluster (create one with pg_createcluster, or set $%s)", EnvDSN)
	}
	best := slices.MaxFunc(all, func(a, b cluster) int {
		if (a.name == "main") != (b.name == "main") {
			if a.name == "main" {
				return 1
			}
			return -1
		}
		return compareVersions(a.version, b.version)
	})
	return best, nil
}

func compareVersions(a, b string) int {
	x, errA := strconv.ParseFloat(a, 64)
	y, errB := strconv.ParseFloat(b, 64)
	if errA != nil || errB != nil {
		return strings.Compare(a, b)
	}
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

func startCluster(ctx context.Context, c cluster) error {
	cmd := exec.CommandContext(ctx, "pg_ctlcluster", "--skip-systemctl-redirect", c.version, c.name, "start")
	out, err := cmd.CombinedOutput()
	if err != nil && !bytes.Contains(out, []byte("already running")) {
		msg := fmt.Sprintf("start PostgreSQL cluster %s/%s: pg_ctlcluster: %v: %s", c.version, c.name, err, bytes.TrimSpace(out))
		if c.logFile != "" {
			msg += "\n" + tail(c.logFile, 20)
		}
		return errors.New(msg)
	}
	return nil
}

// waitReady connects until the server accepts connections or refuses us
// for good.
func waitReady(ctx context.Context, dsn string) error {
	for {
		err := ping(ctx, dsn)
		if err == nil || isAuthError(err) {
			return err
		}
		var pgErr *pgconn.PgError
		starting := errors.As(err, &pgErr) && pgErr.Code == "57P03" // cannot connect now
		if !starting && !isConnRefused(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("server not ready: %w (%w)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func isAuthError(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "28")
}

func isConnRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)
}

// createRole creates a superuser role for the OS user, as the postgres OS
// user over the cluster's socket (peer authentication). It tolerates the
// role existing already, also when another process creates it meanwhile.
func createRole(ctx context.Context, c cluster, role string) error {
	stmt := fmt.Sprintf(`DO $pgtest$ BEGIN
  CREATE ROLE %s SUPERUSER LOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
  ALTER ROLE %[1]s SUPERUSER LOGIN;
END $pgtest$`, pgx.Identifier{role}.Sanitize())
	cmd := exec.CommandContext(ctx, "runuser", "-u", "postgres", "--",
		"psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", SocketDir, "-p", strconv.Itoa(c.port), "-d", "postgres", "-c", stmt)
	cmd.Dir = "/" // psql as postgres may not be able to enter our working directory
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("create role %q on cluster %s/%s (runuser -u postgres -- psql): %v: %s",
			role, c.version, c.name, err, bytes.TrimSpace(out))
	}
	return nil
}

// lockFile takes an exclusive flock on path, creating it if needed.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if errors.Is(err, os.ErrPermission) {
		f, err = os.Open(path) // another user's: flock works on a read-only file too
	}
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { _ = f.Close() }, nil // closing releases the lock
}

// quoteValue quotes a keyword/value DSN value if it needs it.
func quoteValue(v string) string {
	if v != "" && !strings.ContainsAny(v, ` '\`) {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(log %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "last lines of " + path + ":\n" + strings.Join(lines, "\n")
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return ": " + string(bytes.TrimSpace(ee.Stderr))
	}
	return ""
}
