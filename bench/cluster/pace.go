package cluster

import (
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// paceChunk is the most bytes paced at once: small enough that streams
// sharing a bucket interleave finely, large enough to cost few wake-ups.
const paceChunk = 64 << 10

// bucket paces the bytes of every stream that shares it to rate bytes a
// second, as one network link does.
type bucket struct {
	rate float64
	mu   sync.Mutex
	next time.Time // when the link is free again
}

func newBucket(bytesPerSecond int64) *bucket { return &bucket{rate: float64(bytesPerSecond)} }

// take waits until n more bytes fit the link.
func (b *bucket) take(n int) {
	b.mu.Lock()
	now := time.Now()
	if b.next.Before(now) {
		b.next = now
	}
	b.next = b.next.Add(time.Duration(float64(n) / b.rate * float64(time.Second)))
	until := b.next
	b.mu.Unlock()
	time.Sleep(time.Until(until)) // emulates a link's speed; nothing waits on it
}

// nicWriter paces and counts a node's peer egress.
type nicWriter struct {
	http.ResponseWriter
	b    *bucket
	sent *atomic.Int64
}

func (w *nicWriter) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), paceChunk)]
		w.b.take(len(chunk))
		n, err := w.ResponseWriter.Write(chunk)
		total += n
		w.sent.Add(int64(n))
		if err != nil {
			return total, err
		}
		p = p[n:]
	}
	return total, nil
}

func (w *nicWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// pacedBody paces a response body read from upstream.
type pacedBody struct {
	io.ReadCloser
	b *bucket
}

func (p pacedBody) Read(buf []byte) (int, error) {
	n, err := p.ReadCloser.Read(buf[:min(len(buf), paceChunk)])
	if n > 0 {
		p.b.take(n)
	}
	return n, err
}
