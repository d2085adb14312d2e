package mirror

import (
	"fmt"
	"testing"
	"time"

	"nodecache/internal/registrytest"
)

// benchUpstreamRate throttles each upstream body to 128 MiB/s, so that a
// 64 MiB blob takes about half a second: the fill is paced by upstream,
// as on a real node, and not by the machine.
const benchUpstreamRate = 128 << 20

// BenchmarkColdFill measures the time to last byte of N clients GETting a
// blob nodecache does not have, against ONE direct download of the same
// blob from the same throttled upstream. The throttle is per request, so
// one direct download is what any single client would get without
// nodecache; the ratio is what the cache costs on a miss, however many
// clients share the fill. Each iteration uses a fresh blob.
func BenchmarkColdFill(b *testing.B) {
	for _, clients := range []int{1, 32} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			benchColdFill(b, clients)
		})
	}
}

func benchColdFill(b *testing.B, clients int) {
	e := newBenchEnv(b, registrytest.WithThrottle(benchUpstreamRate))
	direct := benchClient()
	b.Cleanup(direct.CloseIdleConnections)
	const repo = "bench/cold"
	var tNC, tUp, tWarm time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		d := e.up.PushBlob(b, repo, registrytest.Random(uint64(1000+i), benchBlobSize))
		b.StartTimer()
		timeNC := func() error {
			start := time.Now()
			err := benchGetAll(e.client, clients, e.blobURL(repo, d), benchBlobSize)
			tNC += time.Since(start)
			return err
		}
		timeUp := func() error {
			start := time.Now()
			err := benchGet(direct, e.up.URL()+"/v2/"+repo+"/blobs/"+d.String(), nil, benchBlobSize)
			tUp += time.Since(start)
			return err
		}
		first, second := timeNC, timeUp
		if i%2 == 1 {
			first, second = timeUp, timeNC
		}
		if err := first(); err != nil {
			b.Fatal(err)
		}
		if err := second(); err != nil {
			b.Fatal(err)
		}
		if n := e.up.BlobGets(d); n != 2 {
			b.Fatalf("upstream blob GETs = %d, want 2 (one fill, one direct)", n)
		}
		// The same clients again, now from the cache: how long this
		// machine needs to move N copies at all, a floor for the cold
		// time that no cache can beat.
		start := time.Now()
		if err := benchGetAll(e.client, clients, e.blobURL(repo, d), benchBlobSize); err != nil {
			b.Fatal(err)
		}
		tWarm += time.Since(start)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(tNC.Seconds()*1e3/n, "nodecache-ms")
	b.ReportMetric(tUp.Seconds()*1e3/n, "direct-ms")
	b.ReportMetric(tWarm.Seconds()*1e3/n, "warm-floor-ms")
	b.ReportMetric(tNC.Seconds()/tUp.Seconds(), "ratio")
}
