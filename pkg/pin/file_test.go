package pin

import (
	"strconv"
	"strings"
	"testing"
)

func TestParseFile(t *testing.T) {
	const d = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
	tests := []struct {
		name, in string
		want     []string // Ref.String() of each
		err      string   // a part of the error; "" for none
	}{
		{"docker hub short names", "nginx\nbusybox:1.36\n", []string{"docker.io/library/nginx:latest", "docker.io/library/busybox:1.36"}, ""},
		{"comments and blanks", "# pause\n\n  registry.k8s.io/pause:3.10  # sandbox\n\t#x\n", []string{"registry.k8s.io/pause:3.10"}, ""},
		{"digest", "ghcr.io/o/r@" + d, []string{"ghcr.io/o/r@" + d}, ""},
		{"tag and digest", "ghcr.io/o/r:v1@" + d, []string{"ghcr.io/o/r:v1@" + d}, ""},
		{"registry with port", "localhost:5000/a/b:c", []string{"localhost:5000/a/b:c"}, ""},
		{"hash inside a word is not a comment", "ghcr.io/o/r:v1#x", nil, "line 1"},
		{"twice counts once", "nginx\ndocker.io/library/nginx:latest\n", []string{"docker.io/library/nginx:latest"}, ""},
		{"two on a line", "nginx busybox", nil, "line 1: one reference per line"},
		{"upper case", "\nNginx", nil, "line 2"},
		{"bad digest", "ghcr.io/o/r@sha256:abc", nil, "line 1"},
		{"unsupported digest", "ghcr.io/o/r@md5:d41d8cd98f00b204e9800998ecf8427e", nil, "line 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			refs, err := ParseFile(strings.NewReader(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one with %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range refs {
				got = append(got, r.String())
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseFileBounds(t *testing.T) {
	var b strings.Builder
	for i := range MaxPins + 1 {
		b.WriteString("ghcr.io/o/r:t" + strconv.Itoa(i) + "\n")
	}
	if _, err := ParseFile(strings.NewReader(b.String())); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("err = %v, want the bound named", err)
	}
	if _, err := ParseFile(strings.NewReader(strings.Repeat("a", maxLineLength+1))); err == nil {
		t.Fatal("a line past the bound was read")
	}
}

// FuzzParseFile: whatever the file holds, the parser returns an error or
// references that parse again to themselves and name a valid repository.
func FuzzParseFile(f *testing.F) {
	for _, s := range []string{"nginx\n", "# c\nghcr.io/o/r:v1 # x\n", "localhost:5000/a@sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", "a b", "\x00#"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		refs, err := ParseFile(strings.NewReader(in))
		if err != nil {
			return
		}
		if len(refs) > MaxPins {
			t.Fatalf("%d references", len(refs))
		}
		for _, r := range refs {
			again, err := ParseRef(r.String())
			if err != nil || again != r {
				t.Fatalf("%q parsed to %+v, which parses to %+v, %v", in, r, again, err)
			}
			if r.Registry == "" || r.Repository == "" || (r.Tag == "" && r.Digest == "") {
				t.Fatalf("incomplete reference %+v from %q", r, in)
			}
		}
	})
}
