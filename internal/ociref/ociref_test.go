package ociref

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

const (
	sha256Hex = "6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b"
	sha512Hex = sha256Hex + sha256Hex
)

func TestCheckName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"nginx", true},
		{"library/nginx", true},
		{"a/b/c/d", true},
		{"my-org/my_app.x", true},
		{"a__b", true},
		{"a---b", true},
		{"0/1", true},
		{strings.Repeat("a", MaxNameLength), true},
		{strings.Repeat("a", MaxNameLength+1), false},
		{"", false},
		{"Library/nginx", false},
		{"library/../etc", false},
		{"library//nginx", false},
		{"/nginx", false},
		{"nginx/", false},
		{"a___b", false},
		{"a..b", false},
		{"-a", false},
		{"a-", false},
		{"a:b", false},
		{"a b", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckName(tt.name)
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrName)) {
				t.Fatalf("CheckName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
		})
	}
}

func TestCheckTag(t *testing.T) {
	tests := []struct {
		tag string
		ok  bool
	}{
		{"latest", true},
		{"v1.2.3", true},
		{"_x", true},
		{"1.0-rc_1", true},
		{"A", true},
		{strings.Repeat("t", 128), true},
		{strings.Repeat("t", 129), false},
		{"", false},
		{"-bad", false},
		{".bad", false},
		{"a/b", false},
		{"a:b", false},
		{"sha256:" + sha256Hex, false},
	}
	for _, tt := range tests {
		t.Run(tt.tag, func(t *testing.T) {
			err := CheckTag(tt.tag)
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrTag)) {
				t.Fatalf("CheckTag(%q) = %v, want ok=%v", tt.tag, err, tt.ok)
			}
		})
	}
}

// DigestCases are the digests the pull path and the peer API must agree
// on: exactly sha256 and sha512, lowercase, of the right length.
var digestCases = []struct {
	name string
	in   string
	ok   bool
}{
	{"sha256", "sha256:" + sha256Hex, true},
	{"sha512", "sha512:" + sha512Hex, true},
	{"sha384", "sha384:" + strings.Repeat("a", 96), false},
	{"sha1", "sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709", false},
	{"md5", "md5:d41d8cd98f00b204e9800998ecf8427e", false},
	{"uppercase hex", "sha256:" + strings.ToUpper(sha256Hex), false},
	{"uppercase algorithm", "SHA256:" + sha256Hex, false},
	{"short", "sha256:" + sha256Hex[:63], false},
	{"long", "sha256:" + sha256Hex + "0", false},
	{"sha512 of sha256 length", "sha512:" + sha256Hex, false},
	{"not hex", "sha256:" + strings.Repeat("g", 64), false},
	{"last digit not hex", "sha256:" + sha256Hex[:63] + "G", false},
	{"byte above ASCII", "sha256:\xff" + sha256Hex[1:], false},
	{"no algorithm", sha256Hex, false},
	{"empty algorithm", ":" + sha256Hex, false},
	{"empty", "", false},
	{"tag", "latest", false},
	{"path", "sha256:" + sha256Hex[:62] + "/.", false},
}

func TestParseDigest(t *testing.T) {
	for _, tt := range digestCases {
		t.Run(tt.name, func(t *testing.T) {
			d, err := ParseDigest(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("ParseDigest(%q) = %v, want ok=%v", tt.in, err, tt.ok)
			}
			if !tt.ok {
				if !errors.Is(err, ErrDigest) || Check(digest.Digest(tt.in)) == nil {
					t.Fatalf("ParseDigest(%q) = %v, want ErrDigest from it and Check", tt.in, err)
				}
				return
			}
			if d.String() != tt.in || d.OCI() != digest.Digest(tt.in) || Check(digest.Digest(tt.in)) != nil {
				t.Fatalf("ParseDigest(%q) = %s", tt.in, d)
			}
			if got := d.Algorithm().Digest(); string(got) != tt.name || len(d.Sum()) != d.Algorithm().Size() {
				t.Fatalf("ParseDigest(%q): algorithm %s, %d byte sum", tt.in, got, len(d.Sum()))
			}
		})
	}
}

func TestAlgorithms(t *testing.T) {
	for _, a := range Algorithms() {
		got, ok := AlgorithmOf(a.Digest())
		if !ok || got != a || a.Digest().Hash().Size() != a.Size() {
			t.Errorf("%s: AlgorithmOf = %v, %v; hash size %d, Size %d", a, got, ok, a.Digest().Hash().Size(), a.Size())
		}
	}
	if _, ok := AlgorithmOf(digest.SHA384); ok {
		t.Error("sha384 is accepted")
	}
	var zero Algorithm
	if zero.Size() != 0 || zero.Digest() != "" {
		t.Error("the zero Algorithm names an algorithm")
	}
}

func TestKindPath(t *testing.T) {
	for k, want := range map[Kind]string{
		KindBase: "", KindManifests: "manifests", KindBlobs: "blobs", KindTags: "tags/list", KindReferrers: "referrers",
	} {
		if got := k.Path(); got != want {
			t.Errorf("%s.Path() = %q, want %q", k, got, want)
		}
	}
}

// nameOracle is the name grammar written out by hand: components of
// [a-z0-9] runs joined by one '.', one or two '_', or any number of '-',
// separated by single '/'.
func nameOracle(name string) bool {
	if name == "" || len(name) > MaxNameLength {
		return false
	}
	for _, comp := range strings.Split(name, "/") {
		if !componentOracle(comp) {
			return false
		}
	}
	return true
}

func componentOracle(c string) bool {
	alnum := func(b byte) bool { return b >= 'a' && b <= 'z' || b >= '0' && b <= '9' }
	if c == "" || !alnum(c[0]) || !alnum(c[len(c)-1]) {
		return false
	}
	for i := 0; i < len(c); {
		if alnum(c[i]) {
			i++
			continue
		}
		j := i
		for j < len(c) && !alnum(c[j]) {
			j++
		}
		sep := c[i:j]
		if sep != "." && sep != "_" && sep != "__" && strings.Trim(sep, "-") != "" {
			return false
		}
		i = j
	}
	return true
}

func FuzzCheckName(f *testing.F) {
	for _, s := range []string{"nginx", "library/nginx", "a__b/c.d-e", "a___b", "A", "a//b", "a/", "-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if got, want := CheckName(name) == nil, nameOracle(name); got != want {
			t.Fatalf("CheckName(%q) ok=%v, want %v", name, got, want)
		}
	})
}

func FuzzCheckTag(f *testing.F) {
	for _, s := range []string{"latest", "v1.0", "-x", "_", strings.Repeat("t", 129)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tag string) {
		want := len(tag) >= 1 && len(tag) <= 128 && tag[0] != '.' && tag[0] != '-' &&
			strings.Trim(tag, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == ""
		if got := CheckTag(tag) == nil; got != want {
			t.Fatalf("CheckTag(%q) ok=%v, want %v", tag, got, want)
		}
	})
}

// FuzzParseDigest checks ParseDigest against go-digest's own parser
// limited to the accepted algorithms, that what it accepts prints back as
// it came in, and that Check accepts the same digests.
func FuzzParseDigest(f *testing.F) {
	for _, tt := range digestCases {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigest(s)
		ref, refErr := digest.Parse(s)
		refAlg := false
		if refErr == nil {
			_, refAlg = AlgorithmOf(ref.Algorithm())
		}
		if want := refErr == nil && refAlg; (err == nil) != want {
			t.Fatalf("ParseDigest(%q) = %v; go-digest says %v, accepted algorithm %v", s, err, refErr, refAlg)
		}
		if err == nil && d.String() != s {
			t.Fatalf("ParseDigest(%q) prints as %q", s, d)
		}
		if checkErr := Check(digest.Digest(s)); (checkErr == nil) != (err == nil) {
			t.Fatalf("Check(%q) = %v, ParseDigest says %v", s, checkErr, err)
		}
	})
}

// The grammars as the distribution spec writes them: validName and
// validTag must agree with them on every input.
var (
	nameRE = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRE  = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

func FuzzGrammarsMatchSpecRegexps(f *testing.F) {
	for _, s := range []string{"nginx", "library/nginx", "a__b/c.d-e", "a___b", "a--b", "a.-b", "A", "a//b", "a/", "-", "v1.0", "_x", ".x", strings.Repeat("t", 128), strings.Repeat("t", 129), "a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := validName(s), nameRE.MatchString(s); got != want {
			t.Fatalf("validName(%q) = %v, the spec's regexp says %v", s, got, want)
		}
		if got, want := validTag(s), tagRE.MatchString(s); got != want {
			t.Fatalf("validTag(%q) = %v, the spec's regexp says %v", s, got, want)
		}
	})
}

func TestCheckNameAllocs(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = CheckName("library/my-app__x/b.c") }); n != 0 {
		t.Errorf("CheckName of a valid name allocates %v times, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = CheckTag("v1.2.3-rc_1") }); n != 0 {
		t.Errorf("CheckTag of a valid tag allocates %v times, want 0", n)
	}
}
