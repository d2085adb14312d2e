//go:build soak

package soak

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
)

// maxNotes bounds how many failures the report spells out.
const maxNotes = 30

// request is one request of the load and what its answer may be.
type request struct {
	kind   string // for the report: "blob", "range", "fault:stall", ...
	method string
	path   string
	query  string // "" for ns=<upstream>, as containerd sends
	rangeH string
	accept string
	want   []byte // the whole content behind path; nil if unknown
	hangAt int64  // > 0: read this many body bytes, then hang up
	faulty bool   // behind an upstream fault: 502, 503 and 504 are expected, and cut bodies
	bad    bool   // bad input: any answer below 500
}

// tally counts answers by kind and status, and failures by class.
type tally struct {
	mu       sync.Mutex
	kinds    map[string]*kindTally
	failures map[string]int // "wrong bytes", "unexpected 5xx", ...
	notes    []string
}

type kindTally struct {
	requests, errors, cut, hangups int
	status                         map[int]int
}

func newTally() *tally {
	return &tally{kinds: make(map[string]*kindTally), failures: make(map[string]int)}
}

func (tl *tally) add(kind string, f func(*kindTally)) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	k := tl.kinds[kind]
	if k == nil {
		k = &kindTally{status: make(map[int]int)}
		tl.kinds[kind] = k
	}
	f(k)
}

func (tl *tally) fail(class string, r request, format string, args ...any) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.failures[class]++
	if len(tl.notes) < maxNotes {
		tl.notes = append(tl.notes, fmt.Sprintf("%s: %s %s %s Range %q: %s", class, r.kind, r.method, r.path, r.rangeH, fmt.Sprintf(format, args...)))
	}
}

// check reads the answer to r as a client would and judges it.
func (tl *tally) check(r request, resp *http.Response, cancel context.CancelFunc) {
	tl.add(r.kind, func(k *kindTally) { k.status[resp.StatusCode]++ })
	switch code := resp.StatusCode; {
	case code >= 500:
		if !r.faulty || (code != http.StatusBadGateway && code != http.StatusServiceUnavailable && code != http.StatusGatewayTimeout) {
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
			tl.fail("unexpected 5xx", r, "%s %s", resp.Status, bytes.TrimSpace(msg))
		}
		return
	case code == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "":
		// The upstream said when to come back; the client must hear it.
		tl.fail("429 without Retry-After", r, "%s", resp.Status)
		return
	case r.hangAt > 0 && r.method == http.MethodGet:
		_, _ = io.CopyN(io.Discard, resp.Body, r.hangAt)
		cancel()
		tl.add(r.kind, func(k *kindTally) { k.hangups++ })
		return
	case r.method == http.MethodHead:
		if code == http.StatusOK && r.want != nil && !r.faulty && resp.ContentLength != int64(len(r.want)) {
			tl.fail("HEAD length", r, "Content-Length %d, want %d", resp.ContentLength, len(r.want))
		}
		return
	case code == http.StatusOK || code == http.StatusPartialContent:
		tl.checkBody(r, resp)
	case !r.faulty && !r.bad:
		tl.fail("unexpected status", r, "%s", resp.Status)
	}
}

// checkBody reads a 200 or 206 body and compares it, when complete, with
// the content behind it. A complete 206 must also name the content's
// real size: one that names another is a piece of something that is not
// the content, such as a fill that later fails verification.
func (tl *tally) checkBody(r request, resp *http.Response) {
	want, size := r.want, int64(len(r.want))
	if resp.StatusCode == http.StatusPartialContent && want != nil {
		var start, end int64
		if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-%d/%d", &start, &end, &size); err != nil || start < 0 || start > end {
			tl.fail("wrong bytes", r, "Content-Range %q", resp.Header.Get("Content-Range"))
			return
		}
		want = nil
		if end < int64(len(r.want)) {
			want = r.want[start : end+1]
		}
	}
	limit := int64(4 << 20)
	if want != nil {
		limit = int64(len(want)) + 1
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if complete := err == nil && int64(len(body)) < limit; !complete {
		tl.add(r.kind, func(k *kindTally) { k.cut++ })
		if !r.faulty {
			tl.fail("cut body", r, "%s after %d bytes: %v", resp.Status, len(body), err)
		}
		return
	}
	switch {
	case r.want == nil:
	case size != int64(len(r.want)) && want != nil && bytes.Equal(body, want):
		// The right bytes, but as a piece of a representation of another
		// size: the answer came from a fill that later fails verification.
		tl.fail("wrong size", r, "complete %s of %q: the content has %d bytes", resp.Status, resp.Header.Get("Content-Range"), len(r.want))
	case want == nil || !bytes.Equal(body, want):
		tl.fail("wrong bytes", r, "%s with %d bytes that differ from the content's", resp.Status, len(body))
	}
}

// transportError judges a request that got no answer.
func (tl *tally) transportError(r request, err error) {
	tl.add(r.kind, func(k *kindTally) { k.errors++ })
	if !r.faulty {
		tl.fail("no answer", r, "%v", err)
	}
}

// report logs requests by kind and status, then the failures.
func (tl *tally) report(t *testing.T) (total int) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	kinds := make([]string, 0, len(tl.kinds))
	for k := range tl.kinds {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, name := range kinds {
		k := tl.kinds[name]
		total += k.requests
		t.Logf("%-16s %6d requests  %s  errors %d  cut %d  hang-ups %d", name, k.requests, statuses(k.status), k.errors, k.cut, k.hangups)
	}
	t.Logf("%-16s %6d requests", "total", total)
	for class, n := range tl.failures {
		t.Errorf("%s: %d", class, n)
	}
	for _, n := range tl.notes {
		t.Log(n)
	}
	return total
}

func statuses(m map[int]int) string {
	codes := make([]int, 0, len(m))
	for c := range m {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	var b strings.Builder
	for _, c := range codes {
		fmt.Fprintf(&b, "%d:%d ", c, m[c])
	}
	return strings.TrimSpace(b.String())
}
