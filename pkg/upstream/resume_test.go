package upstream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"

	"nodecache/internal/ociref"
	"nodecache/internal/registrytest"
)

const (
	resumeBlobSize = 1 << 20
	cutAt          = 100_000
)

// rangeLog records the Range header of every blob GET, in order.
type rangeLog struct {
	mu     sync.Mutex // guards ranges
	ranges []string
}

func (l *rangeLog) add(r *http.Request) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ranges = append(l.ranges, r.Header.Get("Range"))
	return len(l.ranges)
}

func (l *rangeLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ranges)
}

// resumeFixture is a registry holding one blob whose fault is chosen per
// blob GET: then(n, w, r) handles the n-th (1-based) or returns false.
func resumeFixture(t *testing.T, then func(reg *registrytest.Registry, n int, w http.ResponseWriter, r *http.Request) bool) (*Client, Request, []byte, *rangeLog) {
	t.Helper()
	reg := registrytest.Start(t)
	data := registrytest.Random(7, resumeBlobSize)
	d := reg.PushBlob(t, "team/app", data)
	log := &rangeLog{}
	isBlobGet := registrytest.Route(http.MethodGet, registrytest.KindBlobs)
	reg.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		if !isBlobGet(r) {
			return false
		}
		return then(reg, log.add(r), w, r)
	})
	c := newTestClient(t, reg.URL())
	r := Request{Registry: testRegistry, Repo: "team/app", Kind: ociref.KindBlobs, Ref: d.String(), Method: http.MethodGet}
	return c, r, data, log
}

// readBlob fetches r and reads the whole body.
func readBlob(t *testing.T, c *Client, r Request) ([]byte, error) {
	t.Helper()
	resp, err := c.Do(testCtx(t), r)
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	return io.ReadAll(resp.Body)
}

func TestResumeAfterCuts(t *testing.T) {
	for _, cuts := range []int{1, 3, maxResumes} {
		t.Run(fmt.Sprint(cuts), func(t *testing.T) {
			c, r, data, log := resumeFixture(t, func(reg *registrytest.Registry, n int, w http.ResponseWriter, req *http.Request) bool {
				if n > cuts {
					return false
				}
				return reg.CutAfter(cutAt, nil)(w, req)
			})
			got, err := readBlob(t, c, r)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("got %d bytes, not the blob", len(got))
			}
			want := []string{""}
			for i := 1; i <= cuts; i++ {
				want = append(want, fmt.Sprintf("bytes=%d-", i*cutAt))
			}
			if got := log.get(); !slices.Equal(got, want) {
				t.Errorf("Range headers = %q, want %q", got, want)
			}
		})
	}
}

func TestResumeBudget(t *testing.T) {
	c, r, data, log := resumeFixture(t, func(reg *registrytest.Registry, _ int, w http.ResponseWriter, req *http.Request) bool {
		return reg.CutAfter(cutAt, nil)(w, req)
	})
	got, err := readBlob(t, c, r)
	if !errors.Is(err, ErrResume) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want ErrResume wrapping unexpected EOF", err)
	}
	if n := len(log.get()); n != maxResumes+1 {
		t.Errorf("requests = %d, want %d", n, maxResumes+1)
	}
	if !bytes.Equal(got, data[:len(got)]) || len(got) != (maxResumes+1)*cutAt {
		t.Errorf("delivered %d bytes before failing, want the first %d of the blob", len(got), (maxResumes+1)*cutAt)
	}
}

// TestResumeWith200 serves the resumed request whole, as a registry that
// ignores Range does: the bytes already delivered are skipped.
func TestResumeWith200(t *testing.T) {
	c, r, data, log := resumeFixture(t, func(reg *registrytest.Registry, n int, w http.ResponseWriter, req *http.Request) bool {
		if n == 1 {
			return reg.CutAfter(cutAt, nil)(w, req)
		}
		req.Header.Del("Range") // the registry then answers 200 with everything
		return false
	})
	got, err := readBlob(t, c, r)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, %v; want the blob", len(got), err)
	}
	if got := log.get(); len(got) != 2 || got[1] != fmt.Sprintf("bytes=%d-", cutAt) {
		t.Errorf("Range headers = %q", got)
	}
}

func TestResumeRejectsWrongContinuation(t *testing.T) {
	tests := []struct {
		name  string
		reply func(w http.ResponseWriter)
	}{
		{"206 from the wrong offset", func(w http.ResponseWriter) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-9/%d", resumeBlobSize))
			w.WriteHeader(http.StatusPartialContent)
			_, _ = w.Write(make([]byte, 10))
		}},
		{"206 of another size", func(w http.ResponseWriter) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", cutAt, cutAt+9, resumeBlobSize+1))
			w.WriteHeader(http.StatusPartialContent)
			_, _ = w.Write(make([]byte, 10))
		}},
		{"200 shorter than the bytes delivered", func(w http.ResponseWriter) {
			_, _ = w.Write(make([]byte, 10))
		}},
		{"404", func(w http.ResponseWriter) { w.WriteHeader(http.StatusNotFound) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, r, _, _ := resumeFixture(t, func(reg *registrytest.Registry, n int, w http.ResponseWriter, req *http.Request) bool {
				if n == 1 {
					return reg.CutAfter(cutAt, nil)(w, req)
				}
				tt.reply(w)
				return true
			})
			got, err := readBlob(t, c, r)
			if !errors.Is(err, ErrResume) {
				t.Fatalf("err = %v, want ErrResume", err)
			}
			if len(got) != cutAt {
				t.Errorf("delivered %d bytes, want %d", len(got), cutAt)
			}
		})
	}
}

// TestNoResumeForRanges: a caller's own Range request is passed through
// untouched, as are manifests.
func TestNoResumeForRanges(t *testing.T) {
	c, r, _, log := resumeFixture(t, func(reg *registrytest.Registry, _ int, w http.ResponseWriter, req *http.Request) bool {
		return reg.CutAfter(10, nil)(w, req)
	})
	r.Header = http.Header{"Range": {"bytes=0-99"}}
	resp, err := c.Do(testCtx(t), r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); !errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrResume) {
		t.Errorf("err = %v, want a plain unexpected EOF", err)
	}
	if n := len(log.get()); n != 1 {
		t.Errorf("requests = %d, want 1", n)
	}
}

// TestResumeTail: a GET of a blob's tail ("Range: bytes=N-", how a node
// finishes a blob a peer failed to send) gets exactly the bytes from N
// on, resumed when it breaks, and as a 206 even from a registry that
// ignores Range.
func TestResumeTail(t *testing.T) {
	const from = 40_000 // inside the first cut, so a 200's skip is cut too
	for _, ignoreRange := range []bool{false, true} {
		t.Run(fmt.Sprintf("ignoreRange=%v", ignoreRange), func(t *testing.T) {
			c, r, data, log := resumeFixture(t, func(reg *registrytest.Registry, n int, w http.ResponseWriter, req *http.Request) bool {
				if ignoreRange {
					req.Header.Del("Range")
				}
				if n == 1 {
					return reg.CutAfter(cutAt, nil)(w, req)
				}
				return false
			})
			r.Header = http.Header{"Range": {fmt.Sprintf("bytes=%d-", from)}}
			resp, err := c.Do(testCtx(t), r)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusPartialContent {
				t.Fatalf("status %d, want 206", resp.StatusCode)
			}
			got, err := io.ReadAll(resp.Body)
			if err != nil || !bytes.Equal(got, data[from:]) {
				t.Fatalf("read %d bytes, %v; want the %d bytes from %d", len(got), err, len(data)-from, from)
			}
			// The first answer breaks after cutAt bytes of its body: the
			// tail's, or the whole blob's when Range was ignored.
			resumeAt := from + cutAt
			if ignoreRange {
				resumeAt = cutAt
			}
			if got := log.get(); len(got) != 2 || got[1] != fmt.Sprintf("bytes=%d-", resumeAt) {
				t.Errorf("Range headers = %q, want the tail and then bytes=%d-", got, resumeAt)
			}
		})
	}
}
