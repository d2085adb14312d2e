package ociref

import (
	"errors"
	"testing"
)

func TestIsRegistryComponent(t *testing.T) {
	tests := []struct {
		c         string
		wantCheck bool // CheckRegistry accepts it
		want      bool // and it names a registry as a first component
	}{
		{"docker.io", true, true},
		{"Docker.IO", true, true},
		{"localhost", true, true},
		{"localhost:5000", true, true},
		{"registry:5000", true, true},
		{"127.0.0.1:5050", true, true},
		{"[::1]:5000", true, true},
		{"[::1]", true, true},
		{"up.test", true, true},
		{"library", true, false}, // a namespace: no '.' or ':'
		{"my-org", true, false},
		{"my_app.x", false, false}, // '_' is no host character
		{"-bad.io", false, false},
		{"bad-.io", false, false},
		{"a..b", false, false},
		{"a.b:port", false, false},
		{"a.b:", false, false},
		{"", false, false},
		{"a.b/c", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.c, func(t *testing.T) {
			err := CheckRegistry(tt.c)
			if (err == nil) != tt.wantCheck || (err != nil && !errors.Is(err, ErrRegistry)) {
				t.Fatalf("CheckRegistry(%q) = %v, want ok %v", tt.c, err, tt.wantCheck)
			}
			if got := IsRegistryComponent(tt.c); got != tt.want {
				t.Fatalf("IsRegistryComponent(%q) = %v, want %v", tt.c, got, tt.want)
			}
		})
	}
}
