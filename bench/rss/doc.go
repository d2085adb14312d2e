// Package rss holds BenchmarkDaemonRSS, which measures the memory of the
// real nodecache daemon, run as a separate process, while many clients
// stream one large blob through it: first while it is being filled from
// upstream, then from the cache. It shows that blobs are streamed, never
// held whole in memory.
//
// It has no code of its own besides the benchmark. Run it with
//
//	go test -run '^$' -bench DaemonRSS -benchtime 1x ./bench/rss
package rss
