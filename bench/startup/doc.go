// Package startup holds BenchmarkStartup, which measures how long the
// real nodecache daemon, run as a separate process, takes from exec until
// its /readyz answers 200 over a store of 200,000 and of 1,000,000
// entries after a clean stop, and until its store's index is loaded
// (after a clean stop the daemon is ready before: it serves while the
// index loads in the background), and its RSS at each point.
//
// The stores are built once, from synthetic empty files (the index load
// reads names and one stat per file, never the content), and kept under
// the system's temporary directory for the next run; remove
// $TMPDIR/nodecache-startup to build them again. Run it with
//
//	go test -run '^$' -bench Startup -benchtime 1x ./bench/startup
//
// It has no code of its own besides the benchmark.
package startup
