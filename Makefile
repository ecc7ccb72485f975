# The single build entry point. `make test` is what CI runs (.ci/run).
#
#   make test     install the peers and tools (.ci/setup.sh), go vet and staticcheck, go test -race, then a short run of every
#                 fuzz target (FUZZTIME each, default 100000x: about 3-15 s per target on a 2-core machine)
#   make fuzz     only the fuzz runs
#   make bench    benchmarks
#   make demo     the end-to-end demo (examples/demo)
#   make capture  re-capture the golden wire vectors in testdata/wire (Redis and RabbitMQ) from both
#                 real Celery versions
#
# The tests start their own redis-server processes (internal/celerytest), so nothing here
# starts Redis.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

GO       ?= go
VENV     ?= $(CURDIR)/.venv
TOOLS    ?= $(CURDIR)/.tools/bin
# A count, not a duration: with a duration, Go 1.26's fuzz coordinator can report a bare
# "context deadline exceeded" failure at the deadline when its workers are starved for CPU
# (golang/go#75804, fixed in Go 1.27). A count sets no deadline, so a loaded machine is only slower.
FUZZTIME ?= 100000x
TESTTIMEOUT ?= 20m

export CELERYBRIDGE_VENV := $(VENV)

.PHONY: all test setup vet unit fuzz bench demo capture

all: test

test:
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory setup; \
	$(MAKE) --no-print-directory vet; \
	$(MAKE) --no-print-directory unit; \
	$(MAKE) --no-print-directory fuzz; \
	echo "make test: done in $$(( $$(date +%s) - start ))s"

setup:
	@VENV='$(VENV)' TOOLS='$(TOOLS)' ./.ci/setup.sh

# staticcheck is pinned and installed by setup (.ci/setup.sh); `make test` runs setup first.
vet:
	$(GO) vet ./...
	$(GO) vet -tags capture ./internal/celerytest/  # the AMQP capture, built only for make capture
	$(TOOLS)/staticcheck ./...

unit:
	$(GO) test -race -count=1 -timeout $(TESTTIMEOUT) ./...

# Every `func FuzzXxx(` in a *_test.go file (outside testdata, hidden and underscore directories,
# which the go tool ignores too) gets a short run in its own package, so new targets are picked up
# without editing this file.
fuzz:
	@targets=$$(find . -mindepth 1 \( -name testdata -o -name vendor -o -name '.*' -o -name '_*' \) -prune -o \
		-type f -name '*_test.go' -print0 | sort -z | \
		xargs -0 -r grep -HoE '^func Fuzz[A-Za-z0-9_]*\(' | \
		sed -E 's|^(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\($$|\1 \2|' || true); \
	if [ -z "$$targets" ]; then echo "fuzz: no fuzz targets found"; exit 0; fi; \
	n=0; while read -r dir name; do \
		echo "fuzz: $$name in $$dir ($(FUZZTIME))"; \
		$(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) "$$dir"; \
		n=$$((n+1)); \
	done <<< "$$targets"; \
	echo "fuzz: $$n target(s) passed"

bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./...

demo:
	$(GO) run ./examples/demo

capture: setup
	@./testdata/python/capture_all.sh
	@./testdata/python/capture_amqp_all.sh
