package peer

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"nodecache/internal/clocktest"
)

const (
	testSecret  = "0123456789abcdef-peer-secret"
	otherSecret = "fedcba9876543210-other-secret"
)

func signedRequest(t *testing.T, s *Secret, method, target string) *http.Request {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	s.Sign(r)
	return r
}

func TestLoadSecret(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		err        error
	}{
		{"trailing newline trimmed", testSecret + "\n", nil},
		{"CRLF trimmed", testSecret + "\r\n", nil},
		{"too short", "short-secret\n", ErrSecretTooShort},
		{"15 bytes", "123456789012345", ErrSecretTooShort},
		{"16 bytes", "1234567890123456", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := LoadSecret(writeSecret(t, tc.data))
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if err == nil && string(s.keys.Load().cur) != strings.TrimRight(tc.data, "\r\n") {
				t.Errorf("secret = %q", s.keys.Load().cur)
			}
		})
	}
	if _, err := LoadSecret(writeSecret(t, "short")); err == nil || !strings.Contains(err.Error(), "shorter than 16 bytes") {
		t.Errorf("error %v does not say what is wrong", err)
	}
}

func TestVerify(t *testing.T) {
	clock := clocktest.New()
	s, err := LoadSecret(writeSecret(t, testSecret), WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := LoadSecret(writeSecret(t, otherSecret), WithClock(clock.Now))
	const target = "/peer/v1/blobs/sha256:abc?ns=docker.io&repo=library%2Falpine"
	ok := func() *http.Request { return signedRequest(t, s, http.MethodGet, target) }
	for _, tc := range []struct {
		name string
		req  func() *http.Request
		age  time.Duration // how long after signing it is verified
		want string        // "" to accept
	}{
		{"signed", ok, 0, ""},
		{"no headers", func() *http.Request { return httptest.NewRequest(http.MethodGet, target, nil) }, 0, "no Nodecache-Peer header"},
		{"no peer marker", func() *http.Request { r := ok(); r.Header.Del(HeaderPeer); return r }, 0, "no Nodecache-Peer header"},
		{"no time", func() *http.Request { r := ok(); r.Header.Del(HeaderTime); return r }, 0, "malformed Nodecache-Peer-Time"},
		{"no signature", func() *http.Request { r := ok(); r.Header.Del(HeaderSignature); return r }, 0, "malformed Nodecache-Peer-Signature"},
		{"other secret", func() *http.Request { return signedRequest(t, other, http.MethodGet, target) }, 0, "bad signature"},
		{"other method", func() *http.Request {
			r := ok()
			r.Method = http.MethodHead
			return r
		}, 0, "bad signature"},
		{"other query", func() *http.Request {
			r := ok()
			r.RequestURI = strings.Replace(target, "docker.io", "ghcr.io", 1)
			return r
		}, 0, "bad signature"},
		{"time changed after signing", func() *http.Request {
			r := ok()
			r.Header.Set(HeaderTime, strconv.FormatInt(clock.Now().Unix()+1, 10))
			return r
		}, 0, "bad signature"},
		{"too old", ok, MaxClockSkew + time.Second, "off ours"},
		{"old but within skew", ok, MaxClockSkew, ""},
		{"from the future", ok, -MaxClockSkew - time.Second, "off ours"},
		{"slightly in the future", ok, -MaxClockSkew, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.req()
			clock.Advance(tc.age)
			defer clock.Advance(-tc.age)
			err := s.Verify(r)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (!errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("err = %v, want ErrUnauthenticated mentioning %q", err, tc.want)
			}
		})
	}
}

// TestSecretReload changes the secret file and checks that the new secret
// signs and verifies, the old one is accepted only during the rotation
// grace, and a too-short replacement is refused with the current one kept.
func TestSecretReload(t *testing.T) {
	clock := clocktest.New()
	path := writeSecret(t, testSecret+"\n")
	rl := newReloads()
	log, logs := newTestLogger()
	s, err := LoadSecret(path, WithClock(clock.Now), WithLogger(log), withReloadHook(rl.hook))
	if err != nil {
		t.Fatal(err)
	}
	oldSigner, _ := LoadSecret(writeSecret(t, testSecret), WithClock(clock.Now))
	newSigner, _ := LoadSecret(writeSecret(t, otherSecret), WithClock(clock.Now))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	rl.waitFor(t, "the watch to start", func() bool { return rl.count("secret") > 0 })

	const target = "/peer/v1/blobs/sha256:abc?ns=docker.io&repo=x"
	if err := s.Verify(signedRequest(t, newSigner, http.MethodGet, target)); err == nil {
		t.Fatal("the new secret is accepted before the file changes")
	}
	replaceFile(t, path, otherSecret+"\n")
	rl.waitFor(t, "the new secret", func() bool { return string(s.keys.Load().cur) == otherSecret })
	if err := s.Verify(signedRequest(t, newSigner, http.MethodGet, target)); err != nil {
		t.Errorf("new secret refused: %v", err)
	}
	if err := newSigner.Verify(signedRequest(t, s, http.MethodGet, target)); err != nil {
		t.Errorf("Sign does not use the new secret: %v", err)
	}
	if err := s.Verify(signedRequest(t, oldSigner, http.MethodGet, target)); err != nil {
		t.Errorf("old secret refused within the rotation grace: %v", err)
	}
	clock.Advance(DefaultRotationGrace)
	if err := s.Verify(signedRequest(t, oldSigner, http.MethodGet, target)); err == nil {
		t.Error("old secret accepted after the rotation grace")
	}

	n := rl.count("secret")
	replaceFile(t, path, "short\n")
	rl.waitFor(t, "the short secret", func() bool { return rl.count("secret") > n && rl.last("secret") != nil })
	if string(s.keys.Load().cur) != otherSecret {
		t.Errorf("a too-short secret replaced the current one")
	}
	if !strings.Contains(logs.String(), "shorter than 16 bytes") {
		t.Errorf("the short secret is not logged:\n%s", logs)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	rl.waitFor(t, "the removal", func() bool { return errors.Is(rl.last("secret"), os.ErrNotExist) })
	if err := s.Verify(signedRequest(t, newSigner, http.MethodGet, target)); err != nil {
		t.Errorf("secret lost when its file was removed: %v", err)
	}
}
