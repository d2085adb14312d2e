// Package credentials holds the registry credentials nodecache uses as
// its own identity: from a Docker config file and from a credentials
// file, reloaded when either changes.
//
// It does not speak any registry protocol (pkg/upstream does), does not
// run Docker credential helpers, and does not decide which clients may
// receive content fetched with these credentials.
package credentials

import (
	"fmt"
	"log/slog"
)

// Auth is what nodecache presents to a registry. At most one of the forms
// is used, in this order: RegistryToken, IdentityToken, Username+Password.
//
// Auth never prints its secrets: fmt verbs and slog show only its kind and
// username.
type Auth struct {
	Username string
	Password string
	// IdentityToken is an OAuth2 refresh token (a Docker config's
	// "identitytoken"), exchanged at the registry's token realm.
	IdentityToken string
	// RegistryToken is a bearer token sent to the registry as it is.
	RegistryToken string
}

// IsZero reports whether a holds no credential at all.
func (a Auth) IsZero() bool { return a == Auth{} }

// Kind names the form of a that is used: "registry-token",
// "identity-token", "basic" or "none".
func (a Auth) Kind() string {
	switch {
	case a.RegistryToken != "":
		return "registry-token"
	case a.IdentityToken != "":
		return "identity-token"
	case a.Username != "" || a.Password != "":
		return "basic"
	}
	return "none"
}

// String shows the kind and the username, never a password or token.
func (a Auth) String() string {
	if a.Username == "" {
		return a.Kind()
	}
	return fmt.Sprintf("%s(%s)", a.Kind(), a.Username)
}

// GoString redacts %#v, which would otherwise print every field.
func (a Auth) GoString() string { return "credentials.Auth(" + a.String() + ")" }

// Format makes every verb print String (GoString for %#v). Without it,
// verbs that skip Stringer, such as %d, would print the fields.
func (a Auth) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprint(f, a.GoString())
		return
	}
	fmt.Fprint(f, a.String())
}

// LogValue makes slog show the kind and username only.
func (a Auth) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("kind", a.Kind())}
	if a.Username != "" {
		attrs = append(attrs, slog.String("username", a.Username))
	}
	return slog.GroupValue(attrs...)
}

// Source finds the credentials for a registry host (docker.io, ghcr.io,
// localhost:5000).
type Source interface {
	Lookup(registry string) (Auth, bool)
}
