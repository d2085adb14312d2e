package registrytest

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"
)

// throttleChunk is the pacing unit of a throttled body: small enough that a
// 1 MiB/s limit still looks smooth (about 30 writes a second), large enough
// that pacing costs little at hundreds of MiB/s.
const throttleChunk = 32 << 10

// meteredWriter counts the body bytes of a response and, when rate > 0,
// paces them to rate bytes per second. It is a bandwidth simulator, so it
// sleeps; it stops early, with context.Canceled, once done is closed (done
// is the request context's Done channel: the writer keeps the channel, not
// the context).
type meteredWriter struct {
	http.ResponseWriter
	sent    *atomic.Int64
	rate    int64
	done    <-chan struct{}
	start   time.Time
	written int64
}

func newMeteredWriter(w http.ResponseWriter, sent *atomic.Int64, rate int64, done <-chan struct{}) *meteredWriter {
	return &meteredWriter{ResponseWriter: w, sent: sent, rate: rate, done: done}
}

// Write writes p, in paced chunks when throttled.
func (w *meteredWriter) Write(p []byte) (int, error) {
	if w.rate <= 0 {
		return w.write(p)
	}
	total := 0
	for len(p) > 0 {
		if err := w.pace(); err != nil {
			return total, err
		}
		n, err := w.write(p[:min(len(p), throttleChunk)])
		total += n
		if err != nil {
			return total, err
		}
		// Push the chunk to the wire now, so the client sees the pacing
		// rather than net/http's buffering.
		w.Flush()
		p = p[n:]
	}
	return total, nil
}

func (w *meteredWriter) write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.written += int64(n)
	w.sent.Add(int64(n))
	return n, err
}

// pace waits until the bytes written so far are due at rate, measured from
// the first write.
func (w *meteredWriter) pace() error {
	if w.start.IsZero() {
		w.start = time.Now()
	}
	due := w.start.Add(time.Duration(float64(w.written) / float64(w.rate) * float64(time.Second)))
	wait := time.Until(due)
	if wait <= 0 {
		select {
		case <-w.done:
			return context.Canceled
		default:
			return nil
		}
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-w.done:
		return context.Canceled
	}
}

// Flush flushes the underlying writer, if it can.
func (w *meteredWriter) Flush() {
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *meteredWriter) Unwrap() http.ResponseWriter {
	return w.ResponseWriter
}
