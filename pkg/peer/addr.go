package peer

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// ErrInvalidAddr is wrapped by every error about a malformed peer address,
// peer list or peer file line.
var ErrInvalidAddr = errors.New("invalid peer address")

// maxHostLength is the longest DNS name (RFC 1035); anything longer is a
// typo or garbage, not a host.
const maxHostLength = 253

// NormalizeAddr returns addr in the one spelling used to compare peers and
// to hash them onto the ring: host:port with a lower-case host name and no
// trailing dot, an IPv4 address in dotted quad form (also when written as
// IPv4-mapped IPv6), an IPv6 address in its RFC 5952 form inside brackets,
// and a decimal port from 1 to 65535. Every node must spell a peer the same
// way, or they disagree about who owns what; normalising makes
// "10.0.0.1:5051" and "[::ffff:10.0.0.1]:5051" the same peer.
func NormalizeAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%w %q: %v", ErrInvalidAddr, addr, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 || port[0] == '+' {
		return "", fmt.Errorf("%w %q: port must be a number from 1 to 65535", ErrInvalidAddr, addr)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return "", fmt.Errorf("%w %q: IPv6 zones are not supported", ErrInvalidAddr, addr)
		}
		return net.JoinHostPort(ip.Unmap().String(), strconv.FormatUint(p, 10)), nil
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if !validHostName(host) {
		return "", fmt.Errorf("%w %q: host must be an IP address or a DNS name", ErrInvalidAddr, addr)
	}
	return net.JoinHostPort(host, strconv.FormatUint(p, 10)), nil
}

// validHostName reports whether h is a DNS name of letters, digits and
// hyphens in dot-separated labels of at most 63 bytes. A name whose last
// label is all digits is refused: it is a mistyped IP address such as
// "10.0.0.01", which would otherwise be looked up as a name.
func validHostName(h string) bool {
	if h == "" || len(h) > maxHostLength {
		return false
	}
	last := h[strings.LastIndexByte(h, '.')+1:]
	if strings.Trim(last, "0123456789") == "" {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// ParseList parses a comma-separated list of host:port peers, as given to
// --peers. Blank entries are skipped, duplicates removed, and every entry
// normalised with NormalizeAddr.
func ParseList(s string) ([]string, error) {
	var out []string
	seen := make(map[string]bool)
	for field := range strings.SplitSeq(s, ",") {
		field = strings.TrimSpace(field)
		if field == "" {
			continue
		}
		a, err := NormalizeAddr(field)
		if err != nil {
			return nil, err
		}
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out, nil
}

// LineError is a bad line in a peer file.
type LineError struct {
	File string
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("%s line %d: %v", e.File, e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// parsePeerFile parses the contents of a peer file: one host:port per line,
// blank lines and anything after a '#' ignored. name is used in errors.
func parsePeerFile(name string, data []byte) ([]string, error) {
	var out []string
	seen := make(map[string]bool)
	for i, line := range strings.Split(string(data), "\n") {
		if c := strings.IndexByte(line, '#'); c >= 0 {
			line = line[:c]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		a, err := NormalizeAddr(line)
		if err != nil {
			return nil, &LineError{File: name, Line: i + 1, Err: err}
		}
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out, nil
}

// parseNamePort splits the --peer-dns value name:port, checking both.
func parseNamePort(s string) (name, port string, err error) {
	norm, err := NormalizeAddr(s)
	if err != nil {
		return "", "", err
	}
	name, port, _ = net.SplitHostPort(norm)
	return name, port, nil
}
