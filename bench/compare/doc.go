// Package compare runs nodecache side by side with the caches its users
// would otherwise pick, on the same machine and the same upstream:
//
//   - nodecache, the bin/nodecache binary as its own process;
//   - nginx proxy_cache from Debian's nginx package, configured as
//     docker-registry-proxy configures it (nginx.conf here);
//   - docker/distribution in proxy mode, Debian's docker-registry package
//     (distribution.yml here);
//   - the direct download from upstream, the limit a cache is held to;
//   - in the manifest workloads, a bare Go net/http handler in this
//     process writing the same bytes: the ceiling of a Go server here.
//
// The upstream is an in-process registry (internal/registrytest) whose
// blob and manifest bodies are paced to UpstreamRate per request. Each
// workload runs every contender in turn, in a rotated order, three
// times, and prints one table with each contender's median and its
// ratios to the limit and to the best peer, with the load average.
//
// It is a test behind the benchcompare build tag, run as root (the
// caches' processes and data directories) by `make bench-compare`:
//
//	go test -tags benchcompare -run '^TestCompare$' -count 1 -v -timeout 90m ./bench/compare
//
// COMPARE_REPS sets the repetitions; COMPARE_ONLY runs only the
// workloads whose heading contains it (COMPARE_ONLY=manifest);
// COMPARE_BASELINE names another nodecache binary, an earlier build, to
// run beside bin/nodecache in every workload.
//
// See docs/benchmarks.md for what each workload measures and the last
// figures.
package compare
