package credentials

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

func TestIdentifierDistinguishesEveryPart(t *testing.T) {
	id := NewIdentifier()
	auths := []Auth{
		{Username: "alice", Password: "pw1"},
		{Username: "alice", Password: "pw2"},
		{Username: "bob", Password: "pw1"},
		{Password: "pw1"},
		{Username: "alice"},
		{IdentityToken: "it1"},
		{IdentityToken: "it2"},
		{Username: "alice", IdentityToken: "it1"},
		{RegistryToken: "rt1"},
		{RegistryToken: "rt2"},
		{Password: "rt1"}, // the same secret in another field
		{IdentityToken: "rt1"},
		// Moving bytes between neighbouring fields must change the identity.
		{Username: "a\x00", Password: "b"},
		{Username: "a", Password: "\x00b"},
		{Username: "ab", Password: ""},
		{Username: "a", Password: "b"},
	}
	seen := map[string]int{}
	for i, a := range auths {
		got := id.Of(a)
		if len(got) != 64 {
			t.Fatalf("Of(%d) = %q, want 64 hex digits", i, got)
		}
		if j, dup := seen[got]; dup {
			t.Errorf("auths %d and %d have the same identity", j, i)
		}
		seen[got] = i
		if again := id.Of(a); again != got {
			t.Errorf("Of(%d) is not stable: %q then %q", i, got, again)
		}
	}
}

func TestIdentifierNoneIsEmpty(t *testing.T) {
	if got := NewIdentifier().Of(Auth{}); got != "" {
		t.Fatalf("Of(Auth{}) = %q, want empty", got)
	}
	// No key is needed to name no credentials.
	if got := (Identifier{}).Of(Auth{}); got != "" {
		t.Fatalf("zero Identifier: Of(Auth{}) = %q, want empty", got)
	}
}

func TestIdentifierZeroPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Of on a zero Identifier did not panic")
		}
	}()
	(Identifier{}).Of(Auth{Username: "u", Password: "p"})
}

func TestIdentifierKeyIsPerIdentifier(t *testing.T) {
	a := Auth{Username: "alice", Password: "pw"}
	x, y := NewIdentifier(), NewIdentifier()
	if bytes.Equal(x.key, y.key) {
		t.Fatal("two Identifiers share a key")
	}
	if x.Of(a) == y.Of(a) {
		t.Fatal("two Identifiers name the same credentials alike; the identity would mean something outside its Identifier")
	}
}

func TestIdentifierHidesKey(t *testing.T) {
	id := NewIdentifier()
	key := hex.EncodeToString(id.key)
	outer := struct{ ID Identifier }{id}
	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%d", "%x", "%X"} {
		outs = append(outs, fmt.Sprintf(verb, id), fmt.Sprintf(verb, outer), fmt.Sprintf(verb, &id))
	}
	var text bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("m", "id", id)
	outs = append(outs, text.String())
	for _, out := range outs {
		if strings.Contains(strings.ToLower(out), key) || strings.Contains(out, string(id.key)) {
			t.Errorf("output shows the key: %s", out)
		}
	}
}

func TestIdentifierConcurrent(t *testing.T) {
	id := NewIdentifier()
	a := Auth{Username: "alice", Password: "pw"}
	want := id.Of(a)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				if got := id.Of(a); got != want {
					t.Errorf("Of = %q, want %q", got, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}
