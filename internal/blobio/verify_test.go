package blobio

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"

	"github.com/opencontainers/go-digest"
)

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestReleasable(t *testing.T) {
	tests := []struct {
		n        int64
		verified bool
		want     int64
	}{
		{0, false, 0},
		{0, true, 0},
		{1, false, 0},
		{1, true, 1},
		{100, false, 99},
		{100, true, 100},
	}
	for _, tt := range tests {
		if got := Releasable(tt.n, tt.verified); got != tt.want {
			t.Errorf("Releasable(%d, %v) = %d, want %d", tt.n, tt.verified, got, tt.want)
		}
	}
}

func TestDigester(t *testing.T) {
	data := []byte("some content")
	d := digest.FromBytes(data)
	sha512 := digest.SHA512.FromBytes(data)
	tests := []struct {
		name    string
		d       digest.Digest
		size    int64
		write   []byte
		wantErr error
	}{
		{"good", d, int64(len(data)), data, nil},
		{"good unknown size", d, -1, data, nil},
		{"good sha512", sha512, int64(len(data)), data, nil},
		{"other content", d, int64(len(data)), []byte("other conten"), ErrDigestMismatch},
		{"short", d, int64(len(data)), data[:3], ErrSizeMismatch},
		{"long", d, 3, data, ErrSizeMismatch},
		{"short unknown size", d, -1, data[:3], ErrDigestMismatch},
		{"empty", digest.FromBytes(nil), 0, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewDigester(tt.d, tt.size)
			for _, b := range tt.write { // byte by byte: the hash spans writes
				g.Write([]byte{b})
			}
			if err := g.Verify(); !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("Verify = %v, want %v", err, tt.wantErr)
			}
			if g.Written() != int64(len(tt.write)) {
				t.Fatalf("Written = %d, want %d", g.Written(), len(tt.write))
			}
		})
	}
}

// TestVerifier moved here from pkg/mirror's verifyReader, with its cases.
func TestVerifier(t *testing.T) {
	data := randomBytes(9, 100_000)
	d := digest.FromBytes(data)
	corrupt := bytes.Clone(data)
	corrupt[len(corrupt)-1] ^= 1
	tests := []struct {
		name    string
		src     []byte
		size    int64
		oneByte bool
		wantErr error
	}{
		{"good", data, int64(len(data)), false, nil},
		{"good unknown size", data, -1, false, nil},
		{"good one byte at a time", data, int64(len(data)), true, nil},
		{"last byte flipped", corrupt, int64(len(data)), false, ErrDigestMismatch},
		{"short", data[:500], int64(len(data)), false, ErrSizeMismatch},
		{"short unknown size", data[:500], -1, true, ErrDigestMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var src io.Reader = bytes.NewReader(tt.src)
			if tt.oneByte {
				src = iotest.OneByteReader(src)
			}
			v := NewVerifier(src, d, tt.size)
			var got bytes.Buffer
			var err error
			if tt.oneByte {
				// The client side reads one byte at a time too.
				_, err = io.Copy(&got, iotest.OneByteReader(v))
			} else {
				_, err = io.Copy(&got, v)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && !bytes.Equal(got.Bytes(), data) {
				t.Fatal("good content changed in transit")
			}
			if tt.wantErr != nil && got.Len() >= len(tt.src) {
				t.Fatalf("passed on all %d bytes of bad content", got.Len())
			}
		})
	}
}

// TestVerifierHoldsBackUntilEOF: until the source ends, exactly one byte
// is held back, whatever the source's chunking; a source that ends with
// its last bytes (n > 0 with io.EOF) is verified too; and a source error
// is passed on, never the held byte.
func TestVerifierHoldsBackUntilEOF(t *testing.T) {
	data := randomBytes(3, 10_000)
	d := digest.FromBytes(data)
	t.Run("held back", func(t *testing.T) {
		pr, pw := io.Pipe()
		v := NewVerifier(pr, d, int64(len(data)))
		go func() {
			pw.Write(data)
			pw.CloseWithError(errors.New("source broke"))
		}()
		got, err := io.ReadAll(v)
		if err == nil || err.Error() != "source broke" {
			t.Fatalf("err = %v, want the source's", err)
		}
		if len(got) != len(data)-1 || !bytes.Equal(got, data[:len(got)]) {
			t.Fatalf("passed on %d bytes before the error, want %d", len(got), len(data)-1)
		}
	})
	t.Run("data with EOF", func(t *testing.T) {
		got, err := io.ReadAll(NewVerifier(iotest.DataErrReader(bytes.NewReader(data)), d, -1))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read %d bytes, %v; want the content", len(got), err)
		}
	})
	t.Run("empty", func(t *testing.T) {
		got, err := io.ReadAll(NewVerifier(bytes.NewReader(nil), digest.FromBytes(nil), 0))
		if err != nil || len(got) != 0 {
			t.Fatalf("read %d bytes, %v", len(got), err)
		}
	})
	t.Run("error stays", func(t *testing.T) {
		v := NewVerifier(bytes.NewReader(data[:10]), d, -1)
		_, err := io.ReadAll(v)
		if _, again := v.Read(make([]byte, 1)); !errors.Is(err, ErrDigestMismatch) || again != err {
			t.Fatalf("err = %v then %v, want the same ErrDigestMismatch", err, again)
		}
	})
}
