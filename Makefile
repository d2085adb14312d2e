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

.PHONY: build run test lint bench bench-compare bench-cluster fuzz soak deps clean e2e demo

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
	$(GO) test -run '^$$' -bench '^BenchmarkCachedManifestHandler$$' -benchtime 2s -count 1 ./pkg/daemon
	$(GO) test -run '^$$' -bench '^BenchmarkColdFill$$' -benchtime 5x -count 1 ./pkg/mirror
	$(GO) test -run '^$$' -bench '^BenchmarkDaemonRSS$$' -benchtime 1x -count 1 -v ./bench/rss
	$(GO) test -run '^$$' -bench '^BenchmarkStartup$$' -benchtime 1x -count 1 -timeout 30m -v ./bench/startup
	$(GO) test -run '^$$' -bench '^BenchmarkIndexMemory$$|^BenchmarkOpen100k$$' -benchtime 1x -count 1 ./pkg/diskstore
	$(GO) test -run '^$$' -bench '^BenchmarkIndexMillion$$' -benchtime 1s -count 1 ./pkg/diskstore
	$(GO) test -run '^$$' -bench '^BenchmarkOwner$$' -benchtime 1s -count 1 ./pkg/peer
	$(GO) test -run '^TestSimulateRebalance$$' -count 1 -v ./pkg/peer

# nodecache side by side with nginx proxy_cache, docker/distribution in
# proxy mode and the direct download, each workload 3 times interleaved
# (bench/compare). Needs root; installs Debian's nginx, docker-registry
# and wrk with hack/need.sh. Takes about 7½ minutes; writes under
# /var/tmp/nodecache-bench-compare. COMPARE_REPS=1 for a quick look.
bench-compare: build
	bash hack/need.sh nginx nginx
	bash hack/need.sh docker-registry docker-registry
	bash hack/need.sh wrk wrk
	$(GO) test -tags benchcompare -run '^TestCompare$$' -count 1 -v -timeout 90m ./bench/compare

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

# End-to-end test: real clients pull through nodecache: Debian's containerd
# 1.6 and containerd $(CONTAINERD2_VERSION) (ctr and CRI), and skopeo. Needs
# root; installs Debian's containerd and skopeo packages if missing, and
# builds containerd 2.x from the Go module proxy once per version into a
# cache outside the clone (hack/containerd2.sh). The unit test of
# `containerd config dump` runs again with that 2.x binary.
CONTAINERD2_VERSION ?= v2.4.2
# Bounds the e2e tests, which take under a minute once containerd 2.x is
# built (docs/testing.md); a hung client fails the run instead of CI's
# 90 minutes.
E2E_TIMEOUT ?= 20m
e2e: deps
	bash hack/need.sh containerd containerd ctr
	bash hack/need.sh skopeo skopeo
	dir=$$(GO=$(GO) bash hack/containerd2.sh $(CONTAINERD2_VERSION)) && \
	export NODECACHE_E2E_CONTAINERD2=$$dir NODECACHE_TEST_CONTAINERD2=$${dir:+$$dir/containerd} && \
	$(GO) test -count=1 -v -run '^TestRealContainerdDump$$' ./internal/ctrdconf/ && \
	$(GO) test -tags e2e -count=1 -v -timeout $(E2E_TIMEOUT) ./test/e2e/

# Shows nodecache at work with no network: an in-process upstream registry,
# bin/nodecache in front of it, and three pulls of a multi-arch image with
# containerd's resolver (cold, warm, upstream down). See hack/demo.
demo: build
	$(GO) run ./hack/demo --nodecache bin/nodecache

clean:
	rm -rf bin
