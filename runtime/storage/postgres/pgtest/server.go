package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BinGlob is where StartServer looks for PostgreSQL's server binaries
// (Debian's layout); it takes the newest version found.
const BinGlob = "/usr/lib/postgresql/*/bin"

const (
	// startTimeout bounds initdb and a server start.
	startTimeout = 60 * time.Second
	// stopTimeout bounds a fast shutdown before the server is killed.
	stopTimeout = 30 * time.Second
)

// Server is a private PostgreSQL server for one test: its own data
// directory, socket directory and port on 127.0.0.1, trust authentication,
// no fsync. Stop and Start it to inject faults without disturbing anything
// else on the machine. Its methods are safe for concurrent use.
type Server struct {
	tb   testing.TB
	bin  string
	dir  string // owns data/, sock/ and postgres.log
	port int
	cred *syscall.Credential // the postgres OS user's, when running as root

	mu      sync.Mutex
	cmd     *exec.Cmd     // nil while stopped
	exited  chan struct{} // closed when cmd has exited
	waitErr error         // cmd.Wait's result, set before exited is closed
	logFile *os.File
	reserve int // a socket bound to port while the server is stopped, or -1
}

// StartServer initializes a fresh cluster in a temporary directory and
// starts it on a free port of 127.0.0.1. The server is stopped and its
// directory removed when tb's test ends; if the test binary dies, the
// server gets SIGQUIT (an immediate shutdown). When running as root the
// server runs as the postgres OS user, which owns the directory. Failures
// are fatal to the test.
func StartServer(tb testing.TB) *Server {
	tb.Helper()
	bin, err := binDir()
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	s := &Server{tb: tb, bin: bin, dir: dir, reserve: -1}
	tb.Cleanup(s.cleanup)
	if err := s.prepare(); err != nil {
		tb.Fatalf("pgtest: private server in %s: %v", dir, err)
	}
	s.Start()
	return s
}

// DSN returns the server's DSN: user postgres, database postgres, over TCP
// on 127.0.0.1. It stays the same across Stop and Start.
func (s *Server) DSN() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", s.port)
}

// Port returns the server's TCP port on 127.0.0.1.
func (s *Server) Port() int { return s.port }

// Stop shuts the server down (a fast shutdown: sessions are disconnected,
// open transactions roll back) and waits for it to exit. The port stays
// reserved, so nothing else takes it before Start, and connecting to it is
// refused. (Reserved: the kernel gives it to no one asking for a free
// port; a program binding that very port with SO_REUSEADDR could still
// take it.) Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stopLocked(); err != nil {
		s.tb.Fatalf("pgtest: %v", err)
	}
}

// Start starts the server again on the same port and data directory and
// waits until it accepts connections. Starting a running server does
// nothing.
func (s *Server) Start() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.startLocked(); err != nil {
		s.tb.Fatalf("pgtest: start private server on port %d: %v", s.port, err)
	}
}

// prepare makes the directory the postgres user's, runs initdb and
// reserves a port.
func (s *Server) prepare() error {
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("running as root, the server must run as the postgres OS user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(s.dir, uid, gid); err != nil {
			return err
		}
	}
	if err := os.Mkdir(filepath.Join(s.dir, "sock"), 0o700); err != nil {
		return err
	}
	if s.cred != nil {
		if err := os.Chown(filepath.Join(s.dir, "sock"), int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cmd := s.command(ctx, "initdb", "-D", filepath.Join(s.dir, "data"), "-U", "postgres",
		"-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %v\n%s", err, out)
	}
	port, fd, err := reservePort(0)
	if err != nil {
		return err
	}
	s.port, s.reserve = port, fd
	return nil
}

// command returns a command running one of the server binaries, as the
// postgres user when we are root.
func (s *Server) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	return cmd
}

func (s *Server) startLocked() error {
	if s.cmd != nil {
		return nil
	}
	if s.reserve >= 0 {
		_ = syscall.Close(s.reserve) // hand the port to the server
		s.reserve = -1
	}
	logPath := filepath.Join(s.dir, "postgres.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	// Not CommandContext: the server outlives this call.
	cmd := exec.Command(filepath.Join(s.bin, "postgres"),
		"-D", filepath.Join(s.dir, "data"),
		"-p", strconv.Itoa(s.port),
		"-k", filepath.Join(s.dir, "sock"),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
	)
	cmd.Dir = s.dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C"}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: s.cred,
		Pdeathsig:  syscall.SIGQUIT, // immediate shutdown if the test binary dies
	}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return err
	}
	exited := make(chan struct{})
	s.cmd, s.exited, s.logFile = cmd, exited, logFile
	go func() {
		err := cmd.Wait()
		s.waitErr = err // read only after exited is closed
		close(exited)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		err := ping(pctx, s.DSN())
		pcancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			werr := s.waitErr
			s.cleanupProcess()
			return fmt.Errorf("server exited: %v\n%s", werr, tail(logPath, 30))
		case <-ctx.Done():
			_ = s.stopLocked()
			return fmt.Errorf("not ready after %v: %v\n%s", startTimeout, err, tail(logPath, 30))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *Server) stopLocked() error {
	if s.cmd == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT) // fast shutdown
	select {
	case <-s.exited:
	case <-time.After(stopTimeout):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cleanupProcess()
	port, fd, err := reservePort(s.port)
	if err != nil {
		return fmt.Errorf("server stopped, but port %d could not be kept: %w", s.port, err)
	}
	s.port, s.reserve = port, fd
	return nil
}

// cleanupProcess forgets the exited server process.
func (s *Server) cleanupProcess() {
	_ = s.logFile.Close()
	s.cmd, s.exited, s.logFile = nil, nil, nil
}

func (s *Server) cleanup() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stopLocked(); err != nil {
		s.tb.Errorf("pgtest: %v", err)
	}
	if s.reserve >= 0 {
		_ = syscall.Close(s.reserve)
		s.reserve = -1
	}
	if err := os.RemoveAll(s.dir); err != nil {
		s.tb.Errorf("pgtest: remove %s: %v", s.dir, err)
	}
}

// reservePort binds a TCP socket to 127.0.0.1:port (0: any free port)
// without listening on it. While it is open the kernel hands the port to
// no one who asks for a free port, and connections to it are refused.
func reservePort(port int) (int, int, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, -1, fmt.Errorf("socket: %w", err)
	}
	// SO_REUSEADDR: the stopped server's connections leave the port in
	// TIME_WAIT. It lets a socket bound with it share the port, but no
	// request for a free port (bind to port 0, or an outgoing connection)
	// is given a port that a bound socket holds.
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		_ = syscall.Close(fd)
		return 0, -1, fmt.Errorf("setsockopt: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		_ = syscall.Close(fd)
		return 0, -1, fmt.Errorf("bind 127.0.0.1:%d: %w", port, err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		_ = syscall.Close(fd)
		return 0, -1, fmt.Errorf("getsockname: %w", err)
	}
	return sa.(*syscall.SockaddrInet4).Port, fd, nil
}

// binDir returns the newest PostgreSQL's server binary directory.
func binDir() (string, error) {
	dirs, _ := filepath.Glob(BinGlob)
	dirs = slices.DeleteFunc(dirs, func(d string) bool {
		_, err := os.Stat(filepath.Join(d, "postgres"))
		return err != nil
	})
	if len(dirs) == 0 {
		return "", errors.New("no PostgreSQL server binaries in " + BinGlob + " (apt-get install postgresql)")
	}
	return slices.MaxFunc(dirs, func(a, b string) int {
		return compareVersions(filepath.Base(filepath.Dir(a)), filepath.Base(filepath.Dir(b)))
	}), nil
}
