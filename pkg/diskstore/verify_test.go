package diskstore

import (
	"errors"
	"os"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestVerifyRemovesBitFlippedEntries(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	good := put(t, s, randomBytes(1, 10_000), "")
	bad := put(t, s, randomBytes(2, 10_000), "application/vnd.oci.image.manifest.v1+json")
	p := s.path(bad)
	b, _ := os.ReadFile(p)
	b[5000] ^= 0x01
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var reported []digest.Digest
	res, err := Verify(dir, func(d digest.Digest, err error) {
		if !errors.Is(err, ErrDigestMismatch) {
			t.Errorf("reported %s with %v, want ErrDigestMismatch", d, err)
		}
		reported = append(reported, d)
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Checked != 2 || res.Bad != 1 || res.Bytes != 20_000 || len(reported) != 1 || reported[0] != bad {
		t.Fatalf("Verify = %+v, reported %v", res, reported)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatal("bad entry not removed")
	}
	if _, err := os.Stat(p + typeSuffix); !os.IsNotExist(err) {
		t.Fatal("bad entry's media type not removed")
	}
	s2 := reopen(t, s)
	if !has(s2, good) || has(s2, bad) {
		t.Fatal("after verify the store should hold only the good entry")
	}
	if res, _ := Verify(dir, func(digest.Digest, error) {}); res.Bad != 0 || res.Checked != 1 {
		t.Fatalf("second Verify = %+v", res)
	}
	if _, err := Verify(t.TempDir(), nil); err == nil {
		t.Fatal("Verify of a directory that is no store succeeded")
	}
}
