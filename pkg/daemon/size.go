package daemon

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Size is a --max-size or --min-free value: bytes, or a percentage of
// the filesystem that holds the data directory.
type Size struct {
	Bytes   int64
	Percent float64 // used when > 0
}

// sizeUnits maps suffixes to multipliers. Both the binary (KiB) and the
// decimal (KB) spellings mean what they say; K, M, G, T alone are binary,
// as in Kubernetes quantities' Ki and in most admins' heads.
var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
	{"B", 1},
}

// ParseSize parses "500MiB", "20GiB", "1048576", "1.5GiB" or "15%".
func ParseSize(s string) (Size, error) {
	s = strings.TrimSpace(s)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || v <= 0 || v > 100 || math.IsNaN(v) {
			return Size{}, fmt.Errorf("want a percentage above 0 and at most 100, like 15%%")
		}
		return Size{Percent: v}, nil
	}
	mult := int64(1)
	for _, u := range sizeUnits {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = rest, u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || v < 0 || math.IsNaN(v) || math.IsInf(v, 0) || v*float64(mult) >= math.MaxInt64 {
		return Size{}, fmt.Errorf("want a size like 500MiB, 20GiB or 15%%")
	}
	return Size{Bytes: int64(v * float64(mult))}, nil
}

// Resolve turns the size into bytes for a filesystem of total bytes.
func (s Size) Resolve(total int64) int64 {
	if s.Percent > 0 {
		return int64(float64(total) * s.Percent / 100)
	}
	return s.Bytes
}

func (s Size) String() string {
	if s.Percent > 0 {
		return strconv.FormatFloat(s.Percent, 'f', -1, 64) + "%"
	}
	return FormatBytes(s.Bytes)
}

// FormatBytes prints a byte count in binary units, for logs and help.
func FormatBytes(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.m {
			// Three significant decimals at most: a log line, not an exact
			// figure (20GiB, 1.5GiB, 25.197GiB).
			return strconv.FormatFloat(math.Round(float64(n)/float64(u.m)*1000)/1000, 'f', -1, 64) + u.s
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}
