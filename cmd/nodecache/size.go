package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// sizeSpec is a --max-size or --min-free value: bytes, or a percentage of
// the filesystem that holds the data directory.
type sizeSpec struct {
	bytes   int64
	percent float64 // used when > 0
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

// parseSize parses "500MiB", "20GiB", "1048576", "1.5GiB" or "15%".
func parseSize(s string) (sizeSpec, error) {
	s = strings.TrimSpace(s)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || v <= 0 || v > 100 || math.IsNaN(v) {
			return sizeSpec{}, fmt.Errorf("want a percentage above 0 and at most 100, like 15%%")
		}
		return sizeSpec{percent: v}, nil
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
		return sizeSpec{}, fmt.Errorf("want a size like 500MiB, 20GiB or 15%%")
	}
	return sizeSpec{bytes: int64(v * float64(mult))}, nil
}

// resolve turns the spec into bytes for a filesystem of total bytes.
func (s sizeSpec) resolve(total int64) int64 {
	if s.percent > 0 {
		return int64(float64(total) * s.percent / 100)
	}
	return s.bytes
}

func (s sizeSpec) String() string {
	if s.percent > 0 {
		return strconv.FormatFloat(s.percent, 'f', -1, 64) + "%"
	}
	return formatBytes(s.bytes)
}

// formatBytes prints a byte count in binary units, for logs and help.
func formatBytes(n int64) string {
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
