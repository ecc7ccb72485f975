// Command loadtest is the Go counterpart of the original rig's test_batch_submit.py, followed by
// the consistency check the original document does by hand.
//
// It POSTs N tasks (default 1000, all at once) to the API's /submit-task, prints the original's
// summary (total, succeeded, failed, seconds) and writes submitted_tasks.txt
// ("task_index,business_task_id,celery_task_id"); then it waits for every task's callback and
// prints the consistency report: submitted, processed (SUCCESS or FAILURE in the result backend),
// callbacks received, duplicates, missing ids and submit→callback latency p50/p95/p99. The exit
// status is 0 only when submitted = processed = callbacks received with no duplicates; 1 when the
// run is inconsistent or timed out; 2 when it could not run.
//
// Callbacks are counted by the Go receiver (examples/callback_receiver: GET /callbacks/stats and
// GET /callbacks/{task_id}). The original Python receiver keeps nothing it could be asked about;
// for it, send its stdout to a file (PYTHONUNBUFFERED=1) and pass -receiver-log FILE: every line
// naming a task id counts as its callback.
//
//	go run ./examples/loadtest                       # 1000 tasks at once, as the original
//	go run ./examples/loadtest -n 200 -concurrency 50 -timeout 2m
//	go run ./examples/loadtest -submit-only          # only the submissions (API benchmark)
//
// Environment (flags win): API_URL (default http://127.0.0.1:8000), RECEIVER_URL (default: the
// scheme and host of CALLBACK_URL, else http://127.0.0.1:8001), REDIS_URL (default
// redis://127.0.0.1:6379/0; CELERY_RESULT_BACKEND or RESULT_URL, when set, name the result
// backend instead; CELERY_BROKER_URL or REDIS_URL the broker, whose callback outbox holds the
// dead letters, else the result backend's URL).
//
// Redis Sentinel: the URLs may be kombu's sentinel://host:26379;sentinel://host2:26379/0, with
// the master name given as to the other example services: BROKER_MASTER_NAME (-master-name) and
// RESULT_BACKEND_MASTER_NAME (-result-master-name; default the broker's).
//
// A submission answered 503 (the API overloaded, or its Redis unreachable during a failover) is
// sent again after the wait its Retry-After header asks for, at most -retry-503 times (default
// 5; 0 turns retries off and submits through the leaner fasthttp client). The retries are
// counted on their own line after the report: the submission figures count each task once.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/examples/internal/loadtest"
	"github.com/celerybridge/celerybridge/examples/internal/rig"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		apiURL      = fs.String("api", envOr(getenv, "API_URL", loadtest.DefaultAPIURL), "API base URL (API_URL)")
		receiverURL = fs.String("receiver", receiverDefault(getenv), "Go receiver base URL (RECEIVER_URL, else CALLBACK_URL's host)")
		receiverLog = fs.String("receiver-log", "", "count callbacks in this receiver log instead (the Python receiver's stdout)")
		redisURL    = fs.String("redis", resultsDefault(getenv), "result backend URL (CELERY_RESULT_BACKEND, RESULT_URL, REDIS_URL)")
		n           = fs.Int("n", loadtest.DefaultN, "number of tasks")
		concurrency = fs.Int("concurrency", 0, "submissions in flight at most; 0: all at once, like the original's thread per task")
		timeout     = fs.Duration("timeout", loadtest.DefaultTimeout, "bound on the whole run (the original 1 s tasks need -timeout 40m)")
		out         = fs.String("out", "submitted_tasks.txt", "file for task_index,business_task_id,celery_task_id lines; empty: none")
		jsonOut     = fs.String("json", "", "also write the report as JSON to this file")
		submitOnly  = fs.Bool("submit-only", false, "only submit (API benchmark): no wait, no consistency check")
		verbose     = fs.Bool("v", false, "print a line per submission, like the original")
		noProgress  = fs.Bool("no-progress", false, "no progress bars")
		retries     = fs.Int("retry-503", 5, "send a submission answered 503 again, after its Retry-After, at most this many times; 0: never")
		masterName  = fs.String("master-name", getenv("BROKER_MASTER_NAME"), "Sentinel master name for a sentinel:// broker (BROKER_MASTER_NAME)")
		resultName  = fs.String("result-master-name", getenv("RESULT_BACKEND_MASTER_NAME"), "Sentinel master name for a sentinel:// result backend; empty: -master-name (RESULT_BACKEND_MASTER_NAME)")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "loadtest: unexpected arguments %q\n", fs.Args())
		return 2
	}
	cfg := loadtest.Config{
		APIURL:        *apiURL,
		N:             *n,
		Concurrency:   *concurrency,
		Timeout:       *timeout,
		RedisURL:      *redisURL,
		SubmittedFile: *out,
		SkipWait:      *submitOnly,
	}
	if *n <= 0 || *retries < 0 {
		fmt.Fprintln(stderr, "loadtest: -n must be positive and -retry-503 not negative")
		return 2
	}
	pools, err := openPools(getenv, *redisURL, *masterName, *resultName)
	if err != nil {
		fmt.Fprintf(stderr, "loadtest: %v\n", err)
		return 2
	}
	defer pools.close()
	cfg.Pool, cfg.BrokerPool = pools.results, pools.broker
	var rt *retryTransport
	if *retries > 0 {
		conns := *n
		if *concurrency > 0 {
			conns = min(*concurrency, *n)
		}
		rt = &retryTransport{next: loadtest.NewClient(conns).Transport, max: *retries}
		cfg.Client = &http.Client{Transport: rt}
	}
	if !*noProgress {
		cfg.Progress = stderr
	}
	if *verbose {
		cfg.Log = stdout
	}
	if *receiverLog != "" {
		cfg.Source = &loadtest.LogSource{Path: *receiverLog}
	} else {
		cfg.Source = &loadtest.ReceiverSource{URL: *receiverURL}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if rs, ok := cfg.Source.(*loadtest.ReceiverSource); ok && !*submitOnly {
		if _, err := rs.Stats(ctx); err != nil {
			fmt.Fprintf(stderr, "loadtest: warning: %v\n"+
				"loadtest: callbacks are looked up one by one; if %s is the original Python receiver, which keeps nothing to ask, "+
				"count its output instead with -receiver-log FILE\n", err, *receiverURL)
		}
	}
	fmt.Fprintf(stdout, "loadtest: %d tasks to %s/submit-task, concurrency %s; callbacks from %s; results from %s\n",
		cfg.N, cfg.APIURL, concurrencyText(cfg.Concurrency), cfg.Source.Describe(), cfg.RedisURL)
	rep, err := loadtest.Run(ctx, cfg)
	if rep == nil {
		fmt.Fprintf(stderr, "loadtest: %v\n", err)
		return 2
	}
	if *submitOnly {
		rep.PrintSubmission(stdout)
	} else {
		rep.Print(stdout)
	}
	if rt != nil {
		fmt.Fprintf(stdout, "503 answers retried:  %d (%.1f s waited, as Retry-After asked); still 503 after %d retries: %d\n",
			rt.retried.Load(), time.Duration(rt.waited.Load()).Seconds(), *retries, rt.gaveUp.Load())
	}
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if werr := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); werr != nil {
			fmt.Fprintf(stderr, "loadtest: %v\n", werr)
			return 2
		}
	}
	switch {
	case *submitOnly && rep.Submission.Failed > 0:
		return 1
	case err != nil:
		return 1
	}
	return 0
}

// loadPools are the Redis pools of a run: the result backend and the broker (one pool when they
// are the same).
type loadPools struct {
	results, broker celerycompat.Pool
	close           func() error
}

// openPools opens the result backend at resultsURL and the broker (CELERY_BROKER_URL or
// REDIS_URL, else resultsURL) the way the example services do (rig.OpenDeps), Sentinel master
// names included; a sentinel:// URL without one is an error.
func openPools(getenv func(string) string, resultsURL, masterName, resultMasterName string) (loadPools, error) {
	env := func(name string) string {
		switch name {
		case "BROKER_MASTER_NAME":
			return masterName
		case "RESULT_BACKEND_MASTER_NAME":
			return resultMasterName
		case "CELERY_RESULT_BACKEND":
			return resultsURL
		case "RESULT_URL":
			return ""
		case "REDIS_URL":
			if getenv("CELERY_BROKER_URL") == "" && getenv("REDIS_URL") == "" {
				return resultsURL
			}
		}
		return getenv(name)
	}
	rc, err := rig.ConfigFromEnv(env) // validates: a sentinel:// URL needs its master name
	if err != nil {
		return loadPools{}, err
	}
	d, closeFn, err := rig.OpenDeps(rc, nil)
	if err != nil {
		return loadPools{}, err
	}
	p := loadPools{results: d.Results, broker: d.Broker, close: closeFn}
	if p.results == nil {
		p.results = d.Broker
	}
	return p, nil
}

func concurrencyText(c int) string {
	if c == 0 {
		return "all at once"
	}
	return fmt.Sprint(c)
}

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

// receiverDefault is RECEIVER_URL, else the scheme and host of CALLBACK_URL (where the worker
// sends callbacks is where they can be counted), else the original's :8001.
func receiverDefault(getenv func(string) string) string {
	if v := getenv("RECEIVER_URL"); v != "" {
		return v
	}
	if v := getenv("CALLBACK_URL"); v != "" {
		if u, err := url.Parse(v); err == nil && u.Host != "" {
			return u.Scheme + "://" + u.Host
		}
	}
	return loadtest.DefaultReceiverURL
}

// resultsDefault is the result backend the services use: CELERY_RESULT_BACKEND or RESULT_URL,
// else REDIS_URL, else the default.
func resultsDefault(getenv func(string) string) string {
	for _, name := range []string{"CELERY_RESULT_BACKEND", "RESULT_URL", "REDIS_URL"} {
		if v := getenv(name); v != "" {
			return v
		}
	}
	return loadtest.DefaultRedisURL
}
