package blobio

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func TestHoldBack(t *testing.T) {
	errBad := errors.New("bad")
	tests := []struct {
		name     string
		src      string
		n        int64
		verified error
		want     string
		wantErr  error
	}{
		{"verified", "abcdefgh", 4, nil, "abcd", nil},
		{"failed verification keeps the last byte", "abcdefgh", 4, errBad, "abc", errBad},
		{"one byte", "abcdefgh", 1, errBad, "", errBad},
		{"short source", "ab", 4, nil, "ab", io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			r := HoldBack(strings.NewReader(tt.src), tt.n, func() error { calls++; return tt.verified })
			got, err := io.ReadAll(r)
			if string(got) != tt.want || !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
			if tt.wantErr != io.ErrUnexpectedEOF && calls != 1 {
				t.Fatalf("verified called %d times, want 1", calls)
			}
		})
	}
}
