package pgstore

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/callback"
)

// receiverEnv, set to a database URL, makes the test binary a receiver process (see TestMain).
const receiverEnv = "PGSTORE_TEST_RECEIVER_DB"

// runReceiver serves callback.NewHandler on a Store on url, on a free loopback port it prints
// as "listening <addr>", until SIGTERM or its stdin closes. It returns the exit code.
func runReceiver(url string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	s, err := Open(ctx, url, Config{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "receiver:", err)
		return 1
	}
	defer s.Close()
	h, err := callback.NewHandler(callback.HandlerConfig{Store: s})
	if err != nil {
		fmt.Fprintln(os.Stderr, "receiver:", err)
		return 1
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "receiver:", err)
		return 1
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(l) }()
	fmt.Println("listening", l.Addr())
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); stop() }()
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return 0
}

// startReceiverProcess starts the test binary as a receiver process on url and returns its
// address.
func startReceiverProcess(t *testing.T, url string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), receiverEnv+"="+url)
	stdin, err := cmd.StdinPipe() // closed when the test ends: the receiver exits with it
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if err != nil || !ok {
		t.Fatalf("receiver process did not start: %q, %v\n%s", line, err, stderr.String())
	}
	return addr
}

// TestTwoReceiverProcesses: two receiver processes share one database; every callback is
// posted to both at once, twice over. Each is stored once and reported new by exactly one
// request; all the others are answered as duplicates.
func TestTwoReceiverProcesses(t *testing.T) {
	url := newDatabase(t)
	addrs := []string{startReceiverProcess(t, url), startReceiverProcess(t, url)}
	const events, rounds = 200, 2
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var mu sync.Mutex
	fresh := map[string]int{} // task id → answers that said "new"
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range events {
		task := fmt.Sprintf("biz-%d", i)
		body := fmt.Sprintf(`{"task_id":%q,"status":"success","result":{"i":%d},"error":null,"timestamp":"2026-12-04T20:00:00Z","celery_task_id":"c-%d"}`, task, i, i)
		for range rounds {
			for _, addr := range addrs {
				wg.Go(func() {
					sem <- struct{}{}
					defer func() { <-sem }()
					resp, err := client.Post("http://"+addr+"/receive-task-result", "application/json", strings.NewReader(body))
					if err != nil {
						t.Errorf("post %s to %s: %v", task, addr, err)
						return
					}
					defer resp.Body.Close()
					var rep struct {
						Code      int  `json:"code"`
						Duplicate bool `json:"duplicate"`
					}
					if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil || resp.StatusCode != 200 || rep.Code != 200 {
						t.Errorf("post %s to %s: %d %+v %v", task, addr, resp.StatusCode, rep, err)
						return
					}
					if !rep.Duplicate {
						mu.Lock()
						fresh[task]++
						mu.Unlock()
					}
				})
			}
		}
	}
	wg.Wait()
	for i := range events {
		if n := fresh[fmt.Sprintf("biz-%d", i)]; n != 1 {
			t.Errorf("biz-%d: %d of %d answers said new, want exactly 1", i, n, rounds*len(addrs))
		}
	}
	ctx := context.Background()
	s, err := Open(ctx, url, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := callback.StoreStats{Received: events * rounds * 2, Unique: events, Duplicates: events * (rounds*2 - 1),
		ByStatus: map[callback.Status]int64{callback.StatusSuccess: events}}
	if st, err := s.Stats(ctx); err != nil || fmt.Sprint(st) != fmt.Sprint(want) {
		t.Errorf("Stats = %+v, %v; want %+v", st, err, want)
	}
	for _, q := range []string{"biz-0", "c-0", "biz-199", "c-199"} {
		if cbs, err := s.ByTaskID(ctx, q); err != nil || len(cbs) != 1 {
			t.Errorf("ByTaskID(%s) = %d callbacks, %v; want 1", q, len(cbs), err)
		}
	}
}

// TestExampleReceiverOnPostgres: the example receiver (examples/callback_receiver) stores in
// PostgreSQL when CALLBACK_DB is a postgres:// URL, and does not log the URL's password.
func TestExampleReceiverOnPostgres(t *testing.T) {
	url := strings.Replace(newDatabase(t), "postgres@", "postgres:hunter2@", 1) // trust auth ignores the password
	bin := filepath.Join(t.TempDir(), "callback_receiver")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/celerybridge/celerybridge/examples/callback_receiver").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "CALLBACK_DB="+url, fmt.Sprintf("PORT=%d", port), "HOST=127.0.0.1")
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() })
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("receiver not healthy after 30s: %v\n%s", err, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	resp, err := http.Post(base+"/receive-task-result", "application/json",
		strings.NewReader(`{"task_id":"biz-pg","status":"success","result":1,"error":null,"timestamp":"2026-12-04T20:00:00Z"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("post: %s\n%s", resp.Status, logs.String())
	}
	s, err := Open(context.Background(), url, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if cbs, err := s.ByTaskID(context.Background(), "biz-pg"); err != nil || len(cbs) != 1 {
		t.Errorf("PostgreSQL holds %d callbacks for biz-pg, %v; want 1\n%s", len(cbs), err, logs.String())
	}
	if out := logs.String(); strings.Contains(out, "hunter2") || !strings.Contains(out, "127.0.0.1") {
		t.Errorf("receiver log shows the database password, or no start line:\n%s", out)
	}
}

// syncBuffer is a bytes.Buffer safe for a process's stdout and stderr at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
