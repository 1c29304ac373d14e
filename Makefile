# The two commands the README promises: `make demo` and `make test`.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin

.PHONY: demo test test-deps test-go test-e2e caddy vncdemo serialguest build check-build-stress bench soak fuzz

## demo: build Caddy with the plugin, start vncdemo and open a console page
demo:
	./demo/run.sh

## test: install what the tests need, then run every test (Go and browser)
test: test-deps test-go test-e2e

## test-deps: install the system and npm packages the tests need
test-deps:
	./scripts/test-deps.sh

## test-go: Go unit, fuzz-corpus and in-process end-to-end tests
test-go:
	CI=$${CI:-} $(GO) test -race -count=1 -timeout 20m ./...

## test-e2e: noVNC, xterm.js and spice-html5 in Chromium through Caddy over TLS to real VNC servers, a serial console and QEMU's SPICE server
test-e2e: caddy vncdemo serialguest
	cd demo && npm ci --no-audit --no-fund --loglevel=error
	cd e2e && npm ci --no-audit --no-fund --loglevel=error && node --test --test-concurrency=1

## caddy: Caddy with the standard modules and this plugin, into bin/
caddy:
	$(GO) build -o $(BIN)/caddy ./cmd/caddy

## vncdemo: the demo VNC server, into bin/
vncdemo:
	$(GO) build -o $(BIN)/vncdemo ./cmd/vncdemo

## serialguest: boots a Linux guest with a shell on a serial port (QEMU), into bin/
serialguest:
	$(GO) build -o $(BIN)/serialguest ./cmd/serialguest

## build: a production binary with xcaddy from xcaddy.json, checked for the plugin's modules
build:
	./scripts/xcaddy-build.sh

## check-build-stress: the module check of make build, 200 times in a row with both CPUs busy
check-build-stress: caddy
	./scripts/check-modules-stress.sh $(BIN)/caddy 200

## bench: the side-by-side benchmark harness (not part of `make test`)
bench:
	./bench/run.sh

## soak: ~1,000 hostile and normal consoles through the real binary for
## SOAK_DURATION (default 90s), with reloads (not part of `make test`)
soak:
	SOAK_REPORT=$${SOAK_REPORT:-$(CURDIR)/bench/results/soak.md} $(GO) test -tags soak -run '^TestSoak$$' -count=1 -timeout 20m -v ./caddymodule/

## fuzz: run each fuzz target for a while (FUZZTIME, default 30s)
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $${FUZZTIME:-30s} $$pkg || exit 1; \
	  done; \
	done
