package pin

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

const (
	// MaxPins bounds the references of a pin file. Pins are the few images
	// a node cannot do without (CNI, kube-proxy, pause, agents); a
	// thousand is far past that and keeps a mistaken file (a list of every
	// image in a registry) from filling the disk.
	MaxPins = 1000
	// maxLineLength bounds one line: a 255-byte name, a registry host, a
	// 128-byte tag, a sha512 digest and a comment fit well within 4 KiB.
	maxLineLength = 4 << 10
)

// ParseFile reads a pin file: one image reference per line (ParseRef),
// optionally with @digest; "#" starts a comment, at the start of a line
// or after a space; blank lines are skipped. A reference given twice
// counts once. An error names its line.
func ParseFile(r io.Reader) ([]Ref, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), maxLineLength)
	var refs []Ref
	seen := map[Ref]bool{}
	for n := 1; sc.Scan(); n++ {
		line := stripComment(sc.Text())
		if line == "" {
			continue
		}
		if strings.ContainsAny(line, " \t") {
			return nil, fmt.Errorf("line %d: one reference per line, got %q", n, line)
		}
		ref, err := ParseRef(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if seen[ref] {
			continue
		}
		seen[ref] = true
		if len(refs) == MaxPins {
			return nil, fmt.Errorf("line %d: more than %d references", n, MaxPins)
		}
		refs = append(refs, ref)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading pin file: %w", err)
	}
	return refs, nil
}

// stripComment returns line without its comment and surrounding space.
func stripComment(line string) string {
	line = strings.TrimSpace(line)
	if strings.HasPrefix(line, "#") {
		return ""
	}
	for i := 1; i < len(line); i++ {
		if line[i] == '#' && (line[i-1] == ' ' || line[i-1] == '\t') {
			return strings.TrimSpace(line[:i])
		}
	}
	return line
}
