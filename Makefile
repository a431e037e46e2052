# concierge: `make demo` (self-contained showcase) and `make test` (everything CI runs).
SHELL := /bin/bash
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build test test-cluster test-chaos lint fmt demo demo-serve bench ensure-nats ensure-browser rules-check clean

all: build

build:
	$(CARGO) build

# nats-server is needed by the tests and the demo: install Debian's package when missing.
ensure-nats:
	@if command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ]; then \
		echo "nats-server: $$( (command -v nats-server || echo /usr/sbin/nats-server) )"; \
	else \
		echo "nats-server missing: installing it from Debian's packages"; \
		$(SUDO) apt-get update && $(SUDO) apt-get install -y nats-server; \
	fi

# The console's browser tests (tests/console_browser.rs) drive Debian's chromium through
# chromedriver: install both when either is missing.
ensure-browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then \
		echo "chromium: /usr/bin/chromium, chromedriver: /usr/bin/chromedriver"; \
	else \
		echo "chromium or chromedriver missing: installing them from Debian's packages"; \
		$(SUDO) apt-get update && $(SUDO) apt-get install -y chromium chromium-driver; \
	fi

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

test: ensure-nats ensure-browser lint
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --no-fail-fast; \
	else \
		$(CARGO) test --no-fail-fast; \
	fi
	$(CARGO) test --doc
	$(CARGO) run -q -- rules check --dir rules --templates templates
	$(CARGO) run -q -- rules test --dir rules --templates templates
	$(MAKE) test-cluster
	$(MAKE) test-chaos

# 3-node JetStream cluster (deploy/nats configs), two workers and a poller; one node is
# killed mid-run and every event must still be answered exactly once and audited. Runs on
# its own, after the parallel suite: three nats-servers plus a loaded suite on two cores
# would measure the machine, not the fail-over.
test-cluster: ensure-nats
	$(CARGO) test --test failover -- --nocapture

# Chaos suite: the real binary as separate processes (two workers, a poller, a scheduler)
# against the simulator with 429/500 faults and latency, 50 kill -9s and a nats-server
# kill + restart; every guest message must be answered exactly once and audited. Prints
# its seed (replay with CHAOS_SEED=<n>) and one summary line. Under 6 minutes on 2 cores.
test-chaos: ensure-nats
	$(CARGO) test --test chaos -- --nocapture

demo: ensure-nats
	$(CARGO) run -q -- demo

# The demo, then leaves the simulator and the console running (prints the URL and the
# token) until Ctrl-C.
demo-serve: ensure-nats
	$(CARGO) run -q -- demo --serve

bench: ensure-nats
	$(CARGO) build --release --bin concierge
	$(CARGO) bench

fmt:
	$(CARGO) fmt --all
