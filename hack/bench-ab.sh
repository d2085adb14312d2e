#!/usr/bin/env bash
# Runs `make bench`'s benchmarks on two revisions of this repository side by
# side: the test binaries of both are built first, then run in alternating
# order (A B, B A, A B, ...) for ROUNDS rounds, so that the machine's noise
# falls on both alike. Prints each round's benchmark lines and a summary of
# medians with new/old ratios.
#
#   hack/bench-ab.sh OLD_REV [NEW_REV]    (NEW_REV defaults to the work tree)
#   ROUNDS=5 hack/bench-ab.sh main~3
set -euo pipefail
old=${1:?usage: hack/bench-ab.sh OLD_REV [NEW_REV]}
new=${2:-}
rounds=${ROUNDS:-3}
top=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PATH="$PATH:/usr/local/go/bin"

git clone -q "$top" "$work/old" && git -C "$work/old" checkout -q "$old"
if [ -n "$new" ]; then
  git clone -q "$top" "$work/new" && git -C "$work/new" checkout -q "$new"
else
  ln -s "$top" "$work/new"
fi
for t in old new; do
  for p in pkg/mirror pkg/diskstore pkg/peer bench/rss; do
    (cd "$work/$t" && go test -c -o "$work/$t-$(basename $p).test" "./$p")
  done
done

run() { # tree package benchmark-regexp benchtime
  (cd "$work/$1/$2" && "$work/$1-$(basename "$2").test" -test.run '^$' -test.bench "$3" -test.benchtime "$4" -test.benchmem) | grep '^Benchmark' || true
}
benches() {
  run "$1" pkg/mirror '^BenchmarkWarmBlob$' 10x
  run "$1" pkg/mirror '^BenchmarkWarmManifest$' 2s
  run "$1" pkg/mirror '^BenchmarkColdFill$' 5x
  run "$1" bench/rss '^BenchmarkDaemonRSS$' 1x
  run "$1" pkg/diskstore '^BenchmarkIndexMemory$|^BenchmarkOpen100k$' 1x
  run "$1" pkg/diskstore '^BenchmarkIndexMillion$' 1s
  run "$1" pkg/peer '^BenchmarkOwner$' 1s
}
for r in $(seq "$rounds"); do
  order="old new"; [ $((r % 2)) = 0 ] && order="new old"
  for t in $order; do
    echo "### round $r tree $t $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
    benches "$t"
  done
done | tee "$work/out.txt"

echo
echo "median over $rounds rounds: old, new, new/old"
awk '
  /^### / { tree = $5; next }
  /^Benchmark/ {
    name = $1; sub(/-[0-9]+$/, "", name)
    for (i = 3; i < NF; i += 2) {
      if ($(i+1) == "ns/op" && (name ~ /WarmBlob|ColdFill|DaemonRSS|IndexMemory|Open100k/)) continue
      key = name " " $(i+1); v[key, tree, ++n[key, tree]] = $i; keys[key] = 1
    }
  }
  function median(key, tree,   m, a, i, j, t) {
    m = n[key, tree]; for (i = 1; i <= m; i++) a[i] = v[key, tree, i]
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
  }
  END {
    for (k in keys) {
      o = median(k, "old"); w = median(k, "new")
      printf "%-55s %12.4g %12.4g %8s\n", k, o, w, (o != 0 ? sprintf("%.3f", w / o) : "-")
    }
  }' "$work/out.txt" | sort
