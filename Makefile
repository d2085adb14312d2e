# nodecache: the README's two commands are `make run` and `make test`.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
PKGS := ./...
FUZZTIME ?= 10s
SOAK_DURATION ?= 60s
SOAK_TIMEOUT ?= 20m

.PHONY: build run test lint bench bench-cluster fuzz soak deps clean e2e demo

deps:
	$(GO) mod download

build: deps
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/nodecache ./cmd/nodecache

# Builds and runs the daemon with its defaults: 127.0.0.1:5050, the
# docker.io default registry, /var/lib/nodecache as root. Add flags with
# ARGS="--listen unix:///run/nodecache.sock ...".
run: build
	./bin/nodecache serve $(ARGS)

lint: deps
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# Installs Debian's systemd package first if systemd-socket-activate is
# missing (the socket activation test uses it).
test: lint
	bash hack/need.sh systemd systemd-socket-activate systemd-analyze
	$(GO) test -race -count=1 $(PKGS)

# Benchmarks print ratios measured side by side in one run; see docs/benchmarks.md.
# Each comparison (nodecache against http.FileServer, against a direct
# download) is interleaved within one benchmark; DaemonRSS runs the real
# daemon binary as a separate process.
bench: deps
	$(GO) test -run '^$$' -bench '^BenchmarkWarmBlob$$' -benchtime 10x -count 1 ./pkg/mirror
	$(GO) test -run '^$$' -bench '^BenchmarkWarmManifest$$' -benchtime 2s -count 1 ./pkg/mirror
	$(GO) test -run '^$$' -bench '^BenchmarkColdFill$$' -benchtime 5x -count 1 ./pkg/mirror
	$(GO) test -run '^$$' -bench '^BenchmarkDaemonRSS$$' -benchtime 1x -count 1 -v ./bench/rss
	$(GO) test -run '^$$' -bench '^BenchmarkIndexMemory$$|^BenchmarkOpen100k$$' -benchtime 1x -count 1 ./pkg/diskstore
	$(GO) test -run '^$$' -bench '^BenchmarkIndexMillion$$' -benchtime 1s -count 1 ./pkg/diskstore
	$(GO) test -run '^$$' -bench '^BenchmarkOwner$$' -benchtime 1s -count 1 ./pkg/peer
	$(GO) test -run '^TestSimulateRebalance$$' -count 1 -v ./pkg/peer

# A rollout of one image (a 256 MiB layer and small ones) to K = 1, 4, 8,
# 16 and 32 nodes with peers on, each node's card and registry share
# paced at 10:2; prints upstream and busiest egress per image and the time
# against K = 1, then the model for K = 100 and 1000 (docs/peers.md).
# Several minutes; needs about 9 GiB of temporary disk at K = 32.
bench-cluster: deps
	$(GO) test -run '^$$' -bench '^BenchmarkCluster$$' -benchtime 1x -count 1 -timeout 60m -v ./bench/cluster

# A short run of every fuzz target.
fuzz: deps
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

# A bounded mixed load, with upstream faults, against a daemon in-process;
# checks bytes, statuses and that goroutines, fds and RSS come back. See
# docs/testing.md for a longer run.
soak: deps
	SOAK_DURATION=$(SOAK_DURATION) $(GO) test -tags soak -count=1 -v -timeout $(SOAK_TIMEOUT) ./test/soak/

# End-to-end test: a real containerd pulls through nodecache with ctr. Needs
# root; installs Debian's containerd package first if containerd or ctr is
# missing.
e2e: deps
	bash hack/need.sh containerd containerd ctr
	$(GO) test -tags e2e -count=1 -v ./test/e2e/

# Shows nodecache at work with no network: an in-process upstream registry,
# bin/nodecache in front of it, and three pulls of a multi-arch image with
# containerd's resolver (cold, warm, upstream down). See hack/demo.
demo: build
	$(GO) run ./hack/demo --nodecache bin/nodecache

clean:
	rm -rf bin
