package pgstore

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/internal/celerytest"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The tests share one real PostgreSQL server (Debian's postgresql package, installed by
// .ci/setup.sh), started by TestMain on a free loopback port in a temp dir and stopped after
// the tests; each test gets a database of its own.
var (
	pgURL    string // postgres://… of the server's "postgres" database; "" when not started
	pgErr    error  // why the server did not start
	dbSerial atomic.Int64
)

func TestMain(m *testing.M) {
	if url := os.Getenv(receiverEnv); url != "" { // a receiver process of TestTwoReceiverProcesses
		os.Exit(runReceiver(url))
	}
	srv, err := startPostgres()
	if err != nil {
		pgErr = err
	} else {
		pgURL = srv.url
	}
	code := m.Run()
	if srv != nil {
		srv.stop()
	}
	os.Exit(code)
}

// needPostgres returns the server's admin URL, or fails the test under CI=true and skips it
// elsewhere when no server could start.
func needPostgres(t testing.TB) string {
	t.Helper()
	if pgURL == "" {
		if celerytest.InCI() {
			t.Fatalf("CI=true and PostgreSQL cannot start (install it with .ci/setup.sh): %v", pgErr)
		}
		t.Skipf("PostgreSQL cannot start (install it with .ci/setup.sh): %v", pgErr)
	}
	return pgURL
}

// newDatabase creates an empty database for the test and returns its URL.
func newDatabase(t testing.TB) string {
	t.Helper()
	admin := needPostgres(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	name := fmt.Sprintf("cbtest_%d_%d", os.Getpid(), dbSerial.Add(1))
	if _, err := pool.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	return strings.Replace(admin, "/postgres?", "/"+name+"?", 1)
}

// newPool opens a pool on url, closed at the end of the test.
func newPool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// newStore returns a Store on a new database, closed at the end of the test.
func newStore(t testing.TB) (*Store, string) {
	t.Helper()
	url := newDatabase(t)
	s, err := New(context.Background(), newPool(t, url), Config{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() }) // may be closed by the test already
	return s, url
}

// pgServer is a PostgreSQL server this test binary started.
type pgServer struct {
	ctl, dir, url string
	asPostgres    bool
}

// pgBinDir finds the directory of pg_ctl and initdb: on PATH, or in Debian's
// /usr/lib/postgresql/<version>/bin (the newest version), which Debian keeps off PATH.
func pgBinDir() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if _, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(dirs) == 0 {
		return "", fmt.Errorf("pg_ctl is neither on PATH nor in /usr/lib/postgresql/*/bin")
	}
	version := func(p string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(filepath.Dir(p))), 64)
		return v
	}
	slices.SortFunc(dirs, func(a, b string) int { return int(version(a) - version(b)) })
	return filepath.Dir(dirs[len(dirs)-1]), nil
}

// run runs a PostgreSQL program, as the postgres user when this process is root (the server
// refuses to run as root).
func (s *pgServer) run(timeout time.Duration, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	prog := filepath.Join(filepath.Dir(s.ctl), name)
	var cmd *exec.Cmd
	if s.asPostgres {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", prog}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, prog, args...)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// startPostgres initializes a cluster in a new temp dir and starts it on a free loopback port,
// with its socket in the same dir.
func startPostgres() (*pgServer, error) {
	bin, err := pgBinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgstore-")
	if err != nil {
		return nil, err
	}
	s := &pgServer{ctl: filepath.Join(bin, "pg_ctl"), dir: dir, asPostgres: os.Geteuid() == 0}
	if s.asPostgres {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root and there is no postgres user to run the server as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	if err := s.run(2*time.Minute, "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	var lastErr error
	for range 3 { // the free port may be taken between the probe and the start
		port, err := freePort()
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=200", port, dir)
		if lastErr = s.run(time.Minute, "pg_ctl", "-D", data, "-l", filepath.Join(dir, "server.log"), "-w", "-t", "60", "-o", opts, "start"); lastErr == nil {
			s.url = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
			return s, nil
		}
	}
	log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
	os.RemoveAll(dir)
	return nil, fmt.Errorf("%w\nserver log:\n%s", lastErr, log)
}

// stop stops the server at once and removes its files.
func (s *pgServer) stop() {
	_ = s.run(time.Minute, "pg_ctl", "-D", filepath.Join(s.dir, "data"), "-m", "immediate", "-w", "stop")
	_ = os.RemoveAll(s.dir)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
