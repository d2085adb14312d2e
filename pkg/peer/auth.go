package peer

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Headers of a peer request.
const (
	// HeaderPeer marks a request as coming from a peer. A node never
	// forwards such a request to another peer, so requests cannot loop.
	HeaderPeer = "Nodecache-Peer"
	// HeaderTime is the request's time, in Unix seconds.
	HeaderTime = "Nodecache-Peer-Time"
	// HeaderSignature is the hex HMAC-SHA256, under the shared secret, of
	// the method, the request target (path and query) and HeaderTime.
	HeaderSignature = "Nodecache-Peer-Signature"
)

const (
	// MinSecretLength is the shortest secret accepted: 16 bytes is 128
	// bits if random, beyond guessing, and refusing less catches a secret
	// file that holds a placeholder such as "changeme".
	MinSecretLength = 16

	// MaxClockSkew is how far a request's time may be from ours. It bounds
	// how long a captured request can be replayed, and has to cover clock
	// differences between nodes, which NTP keeps well under a second; five
	// minutes is the tolerance Kerberos and AWS signatures use.
	MaxClockSkew = 5 * time.Minute

	// DefaultRotationGrace is how long the previous secret is still
	// accepted after the secret file changes. The kubelet refreshes a
	// mounted Secret on each node at its own moment, up to about two
	// minutes apart; without a grace, nodes that already have the new
	// secret and nodes that do not would refuse each other meanwhile.
	DefaultRotationGrace = 3 * time.Minute

	// maxSecretFileSize bounds what is read from the secret file; a secret
	// is a few dozen bytes.
	maxSecretFileSize = 4096
)

var (
	// ErrSecretTooShort is returned for a secret file holding fewer than
	// MinSecretLength bytes.
	ErrSecretTooShort = fmt.Errorf("peer secret is shorter than %d bytes", MinSecretLength)
	// ErrUnauthenticated is wrapped by every reason Verify refuses a request.
	ErrUnauthenticated = errors.New("peer request not authenticated")
)

// Secret is the shared secret that signs and verifies peer requests, read
// from a file and reloaded when it changes. It is safe for concurrent use;
// Sign and Verify take no lock.
type Secret struct {
	path string
	o    options
	keys atomic.Pointer[keys]

	// mu guards lastErr.
	mu      sync.Mutex
	lastErr string // the reload error last logged, to log each once
}

// keys is an immutable snapshot of the secrets in use.
type keys struct {
	cur     []byte
	prev    []byte    // accepted until changed + grace; nil at start
	changed time.Time // when cur replaced prev
}

// LoadSecret reads the secret from path: the file's bytes without a
// trailing newline. It fails if the file cannot be read or the secret is
// shorter than MinSecretLength. Run keeps it current. Its options are
// WithClock, WithLogger and WithRotationGrace.
func LoadSecret(path string, opts ...SecretOption) (*Secret, error) {
	key, err := readSecret(path)
	if err != nil {
		return nil, err
	}
	s := &Secret{path: path, o: secretOptions(opts)}
	s.keys.Store(&keys{cur: key})
	return s, nil
}

// Run reloads the secret whenever the file changes, until ctx ends. A
// secret that cannot be read or is too short is logged and the previous
// one kept. It returns nil when ctx ends, or an error if the file cannot be
// watched.
func (s *Secret) Run(ctx context.Context) error {
	return watchFile(ctx, s.o.log, s.path, s.reload)
}

func (s *Secret) reload() {
	key, err := readSecret(s.path)
	defer s.o.onReload("secret", err)
	s.mu.Lock()
	logIt := err != nil && err.Error() != s.lastErr
	if err != nil {
		s.lastErr = err.Error()
	} else {
		s.lastErr = ""
	}
	s.mu.Unlock()
	if err != nil {
		if logIt {
			s.o.log.Error("peer secret not reloaded; keeping the previous one", slog.Any("error", err))
		}
		return
	}
	old := s.keys.Load()
	if bytes.Equal(old.cur, key) {
		return
	}
	// Only watchFile's goroutine stores after LoadSecret, so this
	// load-then-store does not race with another reload.
	s.keys.Store(&keys{cur: key, prev: old.cur, changed: s.o.now()})
	s.o.log.Info("peer secret reloaded", slog.String("file", s.path),
		slog.Duration("previous_accepted_for", s.o.grace))
}

func readSecret(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("peer secret: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSecretFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("peer secret %s: %w", path, err)
	}
	if len(data) > maxSecretFileSize {
		return nil, fmt.Errorf("peer secret %s is larger than %d bytes", path, maxSecretFileSize)
	}
	data = bytes.TrimSuffix(data, []byte("\n"))
	data = bytes.TrimSuffix(data, []byte("\r"))
	if len(data) < MinSecretLength {
		return nil, fmt.Errorf("%s: %w", path, ErrSecretTooShort)
	}
	return data, nil
}

// Sign marks r as a peer request and signs it with the current secret at
// the current time. r's URL must not change afterwards.
func (s *Secret) Sign(r *http.Request) {
	ts := strconv.FormatInt(s.o.now().Unix(), 10)
	r.Header.Set(HeaderPeer, "1")
	r.Header.Set(HeaderTime, ts)
	r.Header.Set(HeaderSignature, hex.EncodeToString(mac(s.keys.Load().cur, r.Method, r.URL.RequestURI(), ts)))
}

// Verify checks that r is a peer request signed with the current secret,
// or with the previous one within the rotation grace, at a time within
// MaxClockSkew of ours. Every refusal wraps ErrUnauthenticated.
func (s *Secret) Verify(r *http.Request) error {
	if !IsPeerRequest(r) {
		return fmt.Errorf("%w: no %s header", ErrUnauthenticated, HeaderPeer)
	}
	ts := r.Header.Get(HeaderTime)
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: missing or malformed %s", ErrUnauthenticated, HeaderTime)
	}
	now := s.o.now()
	if skew := now.Sub(time.Unix(sec, 0)); skew > MaxClockSkew || skew < -MaxClockSkew {
		return fmt.Errorf("%w: request time is %s off ours (at most %s allowed)", ErrUnauthenticated, skew, MaxClockSkew)
	}
	sig, err := hex.DecodeString(r.Header.Get(HeaderSignature))
	if err != nil || len(sig) != sha256.Size {
		return fmt.Errorf("%w: missing or malformed %s", ErrUnauthenticated, HeaderSignature)
	}
	target := r.RequestURI // exactly what the client sent and signed
	if target == "" {
		target = r.URL.RequestURI()
	}
	k := s.keys.Load()
	if hmac.Equal(sig, mac(k.cur, r.Method, target, ts)) {
		return nil
	}
	if k.prev != nil && now.Before(k.changed.Add(s.o.grace)) && hmac.Equal(sig, mac(k.prev, r.Method, target, ts)) {
		return nil
	}
	return fmt.Errorf("%w: bad signature", ErrUnauthenticated)
}

// IsPeerRequest reports whether r says it comes from a peer. The mirror
// uses it to never forward such a request to another peer; it is not
// authentication (Verify is).
func IsPeerRequest(r *http.Request) bool { return r.Header.Get(HeaderPeer) == "1" }

// mac is the signature of one request. Newlines separate the fields, and
// none can contain one (net/http refuses them in methods and targets, and
// ts is digits), so two different requests never sign the same bytes.
func mac(key []byte, method, target, ts string) []byte {
	h := hmac.New(sha256.New, key)
	io.WriteString(h, method)
	io.WriteString(h, "\n")
	io.WriteString(h, target)
	io.WriteString(h, "\n")
	io.WriteString(h, ts)
	return h.Sum(nil)
}
