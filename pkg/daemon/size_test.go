package daemon

import "testing"

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		bytes   int64
		percent float64
		bad     bool
	}{
		{"500MiB", 500 << 20, 0, false},
		{"20GiB", 20 << 30, 0, false},
		{"20Gi", 20 << 30, 0, false},
		{"1.5GiB", 3 << 29, 0, false},
		{"100MB", 100_000_000, 0, false},
		{"1048576", 1 << 20, 0, false},
		{"0", 0, 0, false},
		{"15%", 0, 15, false},
		{"0.5%", 0, 0.5, false},
		{"0%", 0, 0, true},
		{"101%", 0, 0, true},
		{"-1GiB", 0, 0, true},
		{"lots", 0, 0, true},
		{"", 0, 0, true},
		{"NaN", 0, 0, true},
		{"1e30TiB", 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if tt.bad {
				if err == nil {
					t.Fatalf("ParseSize(%q) = %+v, want an error", tt.in, got)
				}
				return
			}
			if err != nil || got.Bytes != tt.bytes || got.Percent != tt.percent {
				t.Fatalf("ParseSize(%q) = %+v, %v; want %d bytes, %v%%", tt.in, got, err, tt.bytes, tt.percent)
			}
		})
	}
	if got := (Size{Percent: 15}).Resolve(1000); got != 150 {
		t.Fatalf("15%% of 1000 = %d", got)
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"500MiB", "15%", "1.5GiB", "7", "1e3KB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseSize(s)
		if err != nil {
			return
		}
		if got.Bytes < 0 || got.Percent < 0 || got.Percent > 100 {
			t.Fatalf("ParseSize(%q) = %+v: out of range", s, got)
		}
	})
}
