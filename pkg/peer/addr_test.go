package peer

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestNormalizeAddr(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"10.0.0.1:5051", "10.0.0.1:5051"},
		{"[::ffff:10.0.0.1]:5051", "10.0.0.1:5051"},
		{"[2001:DB8:0:0::1]:80", "[2001:db8::1]:80"},
		{"Node-1.Example.COM.:5051", "node-1.example.com:5051"},
		{"localhost:05051", "localhost:5051"},
		{"10.0.0.1", ""},            // no port
		{"10.0.0.1:0", ""},          // port 0
		{"10.0.0.1:65536", ""},      // port too large
		{"10.0.0.1:+80", ""},        // signed port
		{"10.0.0.01:80", ""},        // mistyped IP, not a name
		{"[fe80::1%eth0]:80", ""},   // zone
		{"-bad.example:80", ""},     // label starts with a hyphen
		{"a..b:80", ""},             // empty label
		{"under_score.io:80", ""},   // not a host name
		{":80", ""},                 // no host
		{"http://a.example:80", ""}, // a URL, not an address
	} {
		got, err := NormalizeAddr(tc.in)
		if tc.want == "" {
			if err == nil || !errors.Is(err, ErrInvalidAddr) {
				t.Errorf("NormalizeAddr(%q) = %q, %v; want an ErrInvalidAddr", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("NormalizeAddr(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestParseList(t *testing.T) {
	got, err := ParseList(" 10.0.0.2:5051, ,10.0.0.1:5051,[::ffff:10.0.0.2]:5051,")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.0.0.2:5051", "10.0.0.1:5051"}; !slices.Equal(got, want) {
		t.Errorf("ParseList = %q, want %q", got, want)
	}
	if _, err := ParseList("10.0.0.1:5051,nope"); !errors.Is(err, ErrInvalidAddr) {
		t.Errorf("ParseList with a bad entry: err = %v, want ErrInvalidAddr", err)
	}
}

func TestParsePeerFile(t *testing.T) {
	got, err := parsePeerFile("peers", []byte("# nodes\n\n10.0.0.1:5051\n  10.0.0.2:5051   # rack 2\r\n10.0.0.1:5051\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.0.0.1:5051", "10.0.0.2:5051"}; !slices.Equal(got, want) {
		t.Errorf("parsePeerFile = %q, want %q", got, want)
	}
	_, err = parsePeerFile("/etc/peers", []byte("10.0.0.1:5051\n# ok\n10.0.0.2\n"))
	var le *LineError
	if !errors.As(err, &le) || le.File != "/etc/peers" || le.Line != 3 || !errors.Is(err, ErrInvalidAddr) {
		t.Fatalf("bad line 3: err = %v, want a LineError for /etc/peers line 3", err)
	}
	if !strings.HasPrefix(err.Error(), "/etc/peers line 3: ") {
		t.Errorf("error %q does not start with the file and line", err)
	}
}

// checkNormalized fails if a parser returned an address that is not in
// normal form, or the same address twice.
func checkNormalized(t *testing.T, addrs []string) {
	seen := make(map[string]bool)
	for _, a := range addrs {
		n, err := NormalizeAddr(a)
		if err != nil || n != a {
			t.Fatalf("parser returned %q, which normalises to %q, %v", a, n, err)
		}
		if seen[a] {
			t.Fatalf("parser returned %q twice", a)
		}
		seen[a] = true
	}
}

func FuzzParseList(f *testing.F) {
	for _, s := range []string{"10.0.0.1:5051,10.0.0.2:5051", "[::1]:80", "a.example:1, b.example:2", ",,", "x:99999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		addrs, err := ParseList(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidAddr) {
				t.Fatalf("error %v does not wrap ErrInvalidAddr", err)
			}
			return
		}
		checkNormalized(t, addrs)
	})
}

func FuzzParsePeerFile(f *testing.F) {
	for _, s := range []string{"10.0.0.1:5051\n# c\n\n[::1]:80 # x\n", "bad\n", "a.b:1\r\nc.d:2"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		addrs, err := parsePeerFile("f", data)
		if err != nil {
			var le *LineError
			if !errors.As(err, &le) || le.Line < 1 || le.Line > strings.Count(string(data), "\n")+1 {
				t.Fatalf("error %v is not a LineError with a line of the input", err)
			}
			return
		}
		checkNormalized(t, addrs)
	})
}
