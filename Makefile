# pushhub — build, try, test and install.
#   make run      a demo hub on localhost (plain-uid mode) with instructions
#   make test     the whole test suite
#   make web      serve examples/web.html (on pushhub.js) at http://127.0.0.1:8080/
#   make cluster  two hubs sharing their ports over a local redis-server
#   make install  the binary and the systemd unit (PREFIX, DESTDIR honoured)

CARGO   ?= cargo
PREFIX  ?= /usr/local
DESTDIR ?=
UNITDIR ?= /etc/systemd/system
BIN     := target/release/pushhub
WS      ?= 127.0.0.1:1234
TEXT    ?= 127.0.0.1:5678
# The client commands' --text, when TEXT is not their default.
TEXT_FLAG := $(if $(filter 127.0.0.1:5678,$(TEXT)),, --text $(TEXT))

N       ?= 18000

FUZZ_SECONDS ?= 60
SOAK_SECONDS ?= 300
FUZZ_TARGETS := text_line token v1_frame ws_input

HOST    ?=

# The client libraries' tests: Node ≥ 20 (and its --experimental-websocket
# where the global WebSocket still needs it), Debian's Chromium driven by
# playwright-core, PHP's CLI. Their npm packages are pinned in
# clients/js/test/package-lock.json and installed there by npm ci.
NODE       ?= node
NODE_FLAGS := $(shell $(NODE) --experimental-websocket -e 0 >/dev/null 2>&1 && echo --experimental-websocket)
PHP        ?= php
CHROMIUM   ?= /usr/bin/chromium
JS_DEPS    := clients/js/test/node_modules/.package-lock.json

# kosoku, the runner of the Autobahn WebSocket TestSuite's cases (from PyPI),
# pinned and installed once into a virtualenv of its own under target/.
KOSOKU_VERSION := 0.1.0
KOSOKU_VENV    := target/kosoku-$(KOSOKU_VERSION)
KOSOKU         := $(KOSOKU_VENV)/bin/kosoku

.PHONY: build run cluster template-unit test bench bench-load bench-push bench-cluster bench-chart bench-versus fuzz soak lint install deploy clean \
	conformance conformance-quick conformance-deps web test-clients test-js test-browser test-php clients-deps

build:
	$(CARGO) build --release --locked --bins

run: build
	@echo
	@echo "pushhub demo: plain-uid mode (any client may claim any uid), Ctrl-C to stop."
	@echo "  1. open examples/web.html in a browser and connect as uid1"
	@echo "     (it connects to ws://$(WS)/)"
	@echo "  2. push from another shell, with the binary as the backend:"
	@echo "     $(BIN) push$(TEXT_FLAG) uid1 hello"
	@echo "     $(BIN) push$(TEXT_FLAG) --raw '{\"uid\":\"uid1\",\"percent\":\"88%\"}'"
	@echo "     $(BIN) online$(TEXT_FLAG) uid1"
	@echo "     $(BIN) stats$(TEXT_FLAG)"
	@echo "     ($(BIN) --help lists the commands; $(BIN) help push says more)"
	@echo "  3. or with nc, or PHP, if you have them:"
	@echo "     echo '{\"uid\":\"uid1\",\"percent\":\"88%\"}' | nc -q1 $(subst :, ,$(TEXT))"
	@echo "     php -r '\$$c = stream_socket_client(\"tcp://$(TEXT)\"); fwrite(\$$c, json_encode([\"uid\" => \"uid1\", \"percent\" => \"88%\"]) . PHP_EOL); echo fread(\$$c, 8192);'"
	@echo
	$(BIN) --allow-plain-uid --ws $(WS) --text $(TEXT)

# A local cluster to try: redis-server and two hubs on the same ports
# (--reuse-port), in the foreground; Ctrl-C stops them (deploy/cluster.sh).
cluster: build
	BIN=$(BIN) WS=$(WS) TEXT=$(TEXT) deploy/cluster.sh

# The unit and integration tests, then the quick conformance run and the
# client libraries' tests on the debug builds they leave behind.
test: conformance-deps clients-deps
	$(CARGO) test --locked
	KOSOKU=$(KOSOKU) conformance/run.sh quick
	$(MAKE) test-clients

# pushhub.js in Node (the protocol cases and a 2,000-client reconnect storm)
# and in headless Chromium, and the PHP client, each against real hubs.
test-clients: test-js test-browser test-php

test-js: clients-deps target/debug/pushhub
	$(NODE) $(NODE_FLAGS) --test clients/js/test/node/

test-browser: clients-deps target/debug/pushhub
	CHROMIUM=$(CHROMIUM) $(NODE) --test clients/js/test/browser/

test-php: target/debug/pushhub
	$(PHP) clients/php/tests/run.php

target/debug/pushhub: FORCE
	$(CARGO) build --locked --bin pushhub

clients-deps: $(JS_DEPS)

$(JS_DEPS): clients/js/test/package-lock.json
	cd clients/js/test && npm ci --no-audit --no-fund

# examples/web.html and pushhub.js over http, so that the page can use the
# library (a file:// page has the raw modes only).
web:
	$(NODE) examples/serve.mjs 8080

FORCE:

# The WebSocket conformance run (conformance/run.sh): the Autobahn TestSuite's
# cases against a release hub with the echo backend behind it; the full run
# rewrites CONFORMANCE.md. Reports: target/conformance/reports/.
conformance: conformance-deps
	KOSOKU=$(KOSOKU) conformance/run.sh --markdown CONFORMANCE.md full

conformance-quick: conformance-deps
	KOSOKU=$(KOSOKU) conformance/run.sh quick

conformance-deps: $(KOSOKU)

$(KOSOKU):
	@python3 -m venv $(KOSOKU_VENV) || { echo "python3 with venv is needed for kosoku (Debian/Ubuntu: sudo apt install python3-venv)"; exit 1; }
	$(KOSOKU_VENV)/bin/pip install --quiet --disable-pip-version-check kosoku==$(KOSOKU_VERSION)

bench:
	$(CARGO) bench --locked --bench hot_paths

# Load benchmarks: release hub + generator on loopback, one fresh hub per step.
# Parameters: N (connections, default 18000), ONLY (a subset, e.g. "conns push";
# the list is in bench/load.sh: conns conns-token conns-wss subs broadcast publish push pushmax slow history replay floor).
# Results are appended to bench/results/load.jsonl (one JSON line per run).
bench-load: build
	N=$(N) ONLY="$(ONLY)" bench/load.sh

# Push-service benchmarks (bench/push.sh): a release hub against
# `pushhub-bench sink`, a local stand-in for APNs, FCM and Web Push: idle RSS
# per provider configured, bytes per queued notification, hub CPU per message
# sent. Parameters: ONLY (a subset of: idle queued cpu), REPEATS (default 3).
# Results are appended to bench/results/push.jsonl.
bench-push: build
	ONLY="$(ONLY)" REPEATS="$(REPEATS)" bench/push.sh

# Cluster benchmarks: a single hub against two hubs over a local redis-server
# (bench/cluster.sh), each set-up REPEATS times (default 3). Parameters: N
# (default 18000), ONLY (a subset of: push pushmax broadcast conns subs).
# Results are appended to bench/results/cluster.jsonl.
bench-cluster: build
	N=$(N) ONLY="$(ONLY)" REPEATS="$(REPEATS)" bench/cluster.sh

# pushhub against uWebSockets.js in the same run (bench/versus.sh): each
# benchmark against one then the other, REPEATS rounds (default 2), then the
# side-by-side table of that run into BENCHMARKS.md (between its versus
# markers). Needs UWS_DIR: the directory of the peer's push.js, npm ci done
# there. Parameters: N (default 18000), ONLY (a subset of: conns conns-wss
# broadcast broadcast-wss push pushmax). Results are appended to
# bench/results/versus.jsonl.
bench-versus: build
	N=$(N) ONLY="$(ONLY)" REPEATS="$(REPEATS)" UWS_DIR="$(UWS_DIR)" OUT=bench/results/versus.jsonl bench/versus.sh
	target/release/pushhub-bench versus-table --input bench/results/versus.jsonl --rewrite BENCHMARKS.md

# The RSS-per-connection chart, drawn from the latest `conns` result.
bench-chart:
	$(CARGO) run --release --locked --bin pushhub-bench -- chart \
		--input bench/results/load.jsonl --output bench/rss.svg

# The soak test for longer than its CI run (tests/soak.rs, 10 s there).
soak:
	PUSHHUB_SOAK_SECONDS=$(SOAK_SECONDS) $(CARGO) test --release --locked --test soak -- --nocapture

# Fuzzing (libFuzzer through cargo-fuzz, which needs a nightly toolchain):
# each target for FUZZ_SECONDS. Crashes are saved under fuzz/artifacts/.
fuzz:
	@command -v cargo-fuzz >/dev/null || { echo "install cargo-fuzz: cargo install cargo-fuzz"; exit 1; }
	cd fuzz && for target in $(FUZZ_TARGETS); do \
		cargo +nightly fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# Depends on the built binary, not on `build`: `sudo make install` must not run
# cargo as root (root often has no toolchain, and target/ would become root's).
install:
	@test -x $(BIN) || { echo "no $(BIN): run 'make build' first (as yourself, not root)"; exit 1; }
	install -D -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/pushhub
	sed 's|/usr/local/bin/pushhub|$(PREFIX)/bin/pushhub|' deploy/pushhub.service > pushhub.service.tmp
	install -D -m 644 pushhub.service.tmp $(DESTDIR)$(UNITDIR)/pushhub.service
	rm -f pushhub.service.tmp
	$(MAKE) --no-print-directory template-unit > pushhub@.service.tmp
	install -D -m 644 pushhub@.service.tmp $(DESTDIR)$(UNITDIR)/pushhub@.service
	rm -f pushhub@.service.tmp
	@echo "installed; next: put the token secret in /etc/pushhub/secret, then"
	@echo "  systemctl daemon-reload && systemctl enable --now pushhub"
	@echo "  (or, one hub per core over a local Redis: systemctl enable --now pushhub@1 pushhub@2)"

# pushhub@N.service, one hub per core: the same unit, each instance sharing the
# ports (--reuse-port) over the local Redis, with its own node id, metrics
# port (568N) and state directory. Printed on stdout.
template-unit:
	@sed -e 's|/usr/local/bin/pushhub|$(PREFIX)/bin/pushhub|' \
		-e 's|^Description=.*|Description=pushhub WebSocket push hub, cluster node %i|' \
		-e 's|^After=network.target|After=network.target redis-server.service|' \
		-e 's|^\(ExecStart=.*--secret-file [^ ]*\)$$|\1 --reuse-port --redis redis://127.0.0.1:6379 --node-id %H-%i --metrics 127.0.0.1:568%i|' \
		-e 's|^StateDirectory=pushhub|StateDirectory=pushhub-%i|' \
		deploy/pushhub.service

# Installs the release binary and the systemd unit on HOST (user@server, with
# sudo there) over ssh, then restarts the service. The secret file is not
# copied: create /etc/pushhub/secret on the host once (see README).
deploy: build
	@test -n "$(HOST)" || { echo "usage: make deploy HOST=user@server"; exit 1; }
	@# A private directory made there, so no other user of the host can swap
	@# the files between the copy and the install.
	tmp=$$(ssh $(HOST) mktemp -d) && test -n "$$tmp" && \
	scp $(BIN) deploy/pushhub.service $(HOST):$$tmp/ && \
	ssh $(HOST) "sudo install -D -m 755 $$tmp/pushhub /usr/local/bin/pushhub && \
		sudo install -D -m 644 $$tmp/pushhub.service /etc/systemd/system/pushhub.service && \
		rm -rf $$tmp && \
		sudo systemctl daemon-reload && sudo systemctl enable pushhub && \
		{ sudo systemctl restart pushhub; systemctl --no-pager --lines=5 status pushhub; }"

clean:
	$(CARGO) clean
