//go:build benchcompare

package compare

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/opencontainers/go-digest"
)

const (
	// requestTimeout bounds one GET of a workload: 20 clients of a cold
	// 256 MiB blob through a cache that downloads it once per client take
	// well under a minute at the upstream's rate.
	requestTimeout = 5 * time.Minute
	// copyBuffer is the clients' read buffer, as large as a fill's.
	copyBuffer = 256 << 10
)

// newClient is a client like a puller's: no compression, connections
// kept for the clients of a workload.
func newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: 64, DisableCompression: true, ForceAttemptHTTP2: false,
	}}
}

// timedGet GETs url and reads it to the end: its time to first and to
// last byte, and the bytes read.
func timedGet(client *http.Client, url string, header http.Header) (ttfb, ttlb time.Duration, n int64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, 0, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, 0, fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	buf := make([]byte, copyBuffer)
	for n == 0 && err == nil {
		var k int
		k, err = resp.Body.Read(buf)
		n += int64(k)
	}
	ttfb = time.Since(start)
	if err == nil {
		var rest int64
		rest, err = io.CopyBuffer(io.Discard, struct{ io.Reader }{resp.Body}, buf)
		n += rest
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return ttfb, time.Since(start), n, err
}

// clientsResult is what a set of concurrent GETs saw: per-client times.
type clientsResult struct {
	ttfb, ttlb []time.Duration
	elapsed    time.Duration
	bytes      int64
}

// getConcurrently has clients GET url rounds times each, all at once,
// checking that each read want bytes.
func getConcurrently(url string, header http.Header, clients, rounds int, want int64) (clientsResult, error) {
	client := newClient()
	defer client.CloseIdleConnections()
	var (
		mu   sync.Mutex
		res  clientsResult
		errs []error
		wg   sync.WaitGroup
	)
	start := time.Now()
	for range clients {
		wg.Go(func() {
			for range rounds {
				ttfb, ttlb, n, err := timedGet(client, url, header)
				if err == nil && n != want {
					err = fmt.Errorf("GET %s: %d bytes, want %d", url, n, want)
				}
				mu.Lock()
				res.ttfb, res.ttlb, res.bytes = append(res.ttfb, ttfb), append(res.ttlb, ttlb), res.bytes+n
				if err != nil {
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res, errors.Join(errs...)
}

func medianDuration(ds []time.Duration) float64 {
	fs := make([]float64, len(ds))
	for i, d := range ds {
		fs[i] = d.Seconds()
	}
	return median(fs)
}

// pullImage pulls ref with go-containerregistry, as crane pull does, and
// writes it as an OCI layout under dir (layers in parallel), which is
// removed after.
func pullImage(ref, dir string) (time.Duration, error) {
	defer os.RemoveAll(dir)
	start := time.Now()
	img, err := crane.Pull(ref, crane.Insecure, crane.WithTransport(newClient().Transport))
	if err != nil {
		return 0, fmt.Errorf("pull %s: %w", ref, err)
	}
	if err := crane.SaveOCI(img, dir); err != nil {
		return 0, fmt.Errorf("save %s: %w", ref, err)
	}
	return time.Since(start), nil
}

// wrkRate runs wrk against url for duration with 32 connections and
// returns its requests per second. Any non-2xx answer fails it.
func wrkRate(url string, header http.Header, duration time.Duration) (float64, error) {
	args := []string{"-t2", "-c32", "-d" + strconv.Itoa(int(duration.Seconds())) + "s"}
	for k, vs := range header {
		for _, v := range vs {
			args = append(args, "-H", k+": "+v)
		}
	}
	out, err := exec.Command("wrk", append(args, url)...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("wrk %s: %v\n%s", url, err, out)
	}
	if regexp.MustCompile(`Non-2xx or 3xx responses|Socket errors`).Match(out) {
		return 0, fmt.Errorf("wrk %s: errors:\n%s", url, out)
	}
	m := regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("wrk %s: no Requests/sec in\n%s", url, out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// rotate returns cs starting at the i-th, so that no contender always
// runs first (on a cold page cache) or last.
func rotate(cs []*contender, i int) []*contender {
	i %= len(cs)
	return slices.Concat(cs[i:], cs[:i])
}

// blobPath is the registry path of blob d in repo.
func blobPath(repo string, d digest.Digest) string { return "/v2/" + repo + "/blobs/" + d.String() }

func pullDir(work, name string) string { return filepath.Join(work, "pull-"+name) }
