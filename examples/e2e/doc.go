// Package e2e runs the example services as separate processes, the way a user would, and checks
// them with the load tester: the all-Go rig, the mixed Go/Python set-ups, crash and outage runs,
// /task-status in every state, every command of examples/WALKTHROUGH.md, and the benchmarks
// against the original Python rig.
//
// It needs redis-server (CELERYBRIDGE_REDIS_SERVER or PATH) and, for the Python set-ups, the
// project venv (CELERYBRIDGE_VENV, default <repo>/.venv, made by `make setup`). Without them the
// tests skip with a message; with CI=true they fail instead. The Go services are built once per
// run with `go build -o` into a temporary directory (without -race: they are the programs under
// test, not this package).
//
// Everything here is in _test.go files; this file only gives the package its doc. The tests
// may import anything in the module (they import examples/internal/loadtest and
// internal/celerytest, and run the services as built programs); nothing imports this package.
package e2e
