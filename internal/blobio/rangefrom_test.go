package blobio

import (
	"bytes"
	"io"
	"net/http"
	"testing"
)

func TestContinuation(t *testing.T) {
	data := []byte("0123456789")
	answer := func(status int, contentRange string, body []byte, length int64) *http.Response {
		h := http.Header{}
		if contentRange != "" {
			h.Set("Content-Range", contentRange)
		}
		return &http.Response{StatusCode: status, Header: h, ContentLength: length, Body: io.NopCloser(bytes.NewReader(body))}
	}
	tests := []struct {
		name   string
		resp   *http.Response
		offset int64
		size   int64
		ok     bool
	}{
		{"206 from offset", answer(206, "bytes 4-9/10", data[4:], 6), 4, 10, true},
		{"206 total unknown", answer(206, "bytes 4-9/*", data[4:], 6), 4, 10, true},
		{"206 size unknown", answer(206, "bytes 4-9/10", data[4:], 6), 4, -1, true},
		{"206 from elsewhere", answer(206, "bytes 0-9/10", data, 10), 4, 10, false},
		{"206 of another size", answer(206, "bytes 4-9/11", data[4:], 6), 4, 10, false},
		{"206 without Content-Range", answer(206, "", data[4:], 6), 4, 10, false},
		{"200 skipped", answer(200, "", data, 10), 4, 10, true},
		{"200 size unknown", answer(200, "", data, -1), 4, -1, true},
		{"200 of another size", answer(200, "", data, 10), 4, 11, false},
		{"200 shorter than the offset", answer(200, "", data[:2], -1), 4, -1, false},
		{"404", answer(404, "", nil, 0), 4, 10, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Continuation(tt.resp, tt.offset, tt.size)
			if (err == nil) != tt.ok {
				t.Fatalf("Continuation = %v, want ok=%v", err, tt.ok)
			}
			if !tt.ok {
				return
			}
			if rest, _ := io.ReadAll(tt.resp.Body); !bytes.Equal(rest, data[tt.offset:]) {
				t.Fatalf("body continues with %q, want %q", rest, data[tt.offset:])
			}
		})
	}
}
