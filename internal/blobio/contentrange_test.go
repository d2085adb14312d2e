package blobio

import (
	"errors"
	"testing"
)

// The cases of the two parsers this one replaced (pkg/upstream's and
// pkg/peer's), merged.
func TestParseContentRange(t *testing.T) {
	tests := []struct {
		in                string
		start, end, total int64
		ok                bool
	}{
		{"bytes 0-9/10", 0, 9, 10, true},
		{"bytes 5-9/*", 5, 9, -1, true},
		{"bytes 10-99/100", 10, 99, 100, true},
		{"bytes 0-0/1", 0, 0, 1, true},
		{"bytes 5-9/9", 0, 0, 0, false},    // end beyond total
		{"bytes 10-99/99", 0, 0, 0, false}, // end beyond total
		{"bytes 9-5/10", 0, 0, 0, false},   // end before start
		{"bytes 10-9/100", 0, 0, 0, false}, // end before start
		{"bytes -5/10", 0, 0, 0, false},    // no start
		{"bytes -1-5/10", 0, 0, 0, false},  // negative start
		{"bytes */10", 0, 0, 0, false},     // unsatisfied-range form
		{"bytes 0-9", 0, 0, 0, false},      // no total
		{"bytes 0-9/ten", 0, 0, 0, false},  // total not a number
		{"bytes 0-x/10", 0, 0, 0, false},   // end not a number
		{"items 0-9/10", 0, 0, 0, false},   // other unit
		{"items 0-1/2", 0, 0, 0, false},    // other unit
		{"", 0, 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			cr, err := ParseContentRange(tt.in)
			if (err == nil) != tt.ok || cr.Start != tt.start || cr.End != tt.end || (tt.ok && cr.Total != tt.total) {
				t.Fatalf("ParseContentRange(%q) = %+v, %v", tt.in, cr, err)
			}
			if err != nil && !errors.Is(err, ErrContentRange) {
				t.Fatalf("error %v does not wrap ErrContentRange", err)
			}
		})
	}
}

// TestContentRangeString: what String writes, ParseContentRange reads
// back as the same range.
func TestContentRangeString(t *testing.T) {
	tests := []struct {
		cr   ContentRange
		want string
	}{
		{ContentRange{Start: 0, End: 9, Total: 10}, "bytes 0-9/10"},
		{ContentRange{Start: 5, End: 9, Total: -1}, "bytes 5-9/*"},
		{ContentRange{Start: 100, End: 1<<40 - 1, Total: 1 << 40}, "bytes 100-1099511627775/1099511627776"},
		{ContentRange{Start: 0, End: 0, Total: 1}, "bytes 0-0/1"},
	}
	for _, tt := range tests {
		got := tt.cr.String()
		if got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.cr, got, tt.want)
		}
		if back, err := ParseContentRange(got); err != nil || back != tt.cr {
			t.Errorf("ParseContentRange(%q) = %+v, %v; want %+v", got, back, err, tt.cr)
		}
	}
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-9/10", "bytes 5-9/*", "bytes 1-2/3", "bytes -1-5/10"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cr, err := ParseContentRange(s)
		if err != nil {
			if !errors.Is(err, ErrContentRange) || cr != (ContentRange{}) {
				t.Fatalf("ParseContentRange(%q) = %+v, %v", s, cr, err)
			}
			return
		}
		if cr.Start < 0 || cr.End < cr.Start || (cr.Total != -1 && cr.Total <= cr.End) || cr.Total < -1 {
			t.Fatalf("ParseContentRange(%q) = %+v: inconsistent", s, cr)
		}
		if back, err := ParseContentRange(cr.String()); err != nil || back != cr {
			t.Fatalf("%+v formats as %q, which parses as %+v, %v", cr, cr.String(), back, err)
		}
	})
}
