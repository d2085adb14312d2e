package upstream

import (
	"encoding/base64"

	"nodecache/pkg/credentials"
)

// AuthSource says which credentials a response was obtained with.
type AuthSource int

const (
	// AuthAnonymous: no credentials were presented. The registry either
	// asked for none or handed out an anonymous token.
	AuthAnonymous AuthSource = iota
	// AuthNode: the node's own credentials (WithCredentials) were
	// presented, because Request.Auth was zero.
	AuthNode
	// AuthRequest: the request's own credentials (Request.Auth) were
	// presented.
	AuthRequest
)

func (s AuthSource) String() string {
	switch s {
	case AuthNode:
		return "node"
	case AuthRequest:
		return "request"
	}
	return "anonymous"
}

// creds are the credentials chosen for one request to one endpoint.
type creds struct {
	auth   credentials.Auth
	source AuthSource
	// identity names auth in the token cache (credentials.Identifier,
	// one per Client), "" for anonymous. Tokens are cached per identity,
	// so a token minted for one client is never sent for another, and the
	// cache never holds the secrets themselves.
	identity string
}

// chooseCreds picks the credentials for r at ep. Request credentials win;
// node credentials are used only when the request carries none. Neither
// goes to a hosts.toml mirror unless it is the registry's own host: a
// client's password for a registry is not for a third party. A mirror gets
// the node credentials stored under its own host name, as containerd does.
func (c *Client) chooseCreds(r Request, ep endpoint) creds {
	var a credentials.Auth
	var src AuthSource
	switch {
	case !ep.mirror && !r.Auth.IsZero():
		a, src = r.Auth, AuthRequest
	case c.creds != nil:
		lookup := r.Registry
		if ep.mirror {
			lookup = ep.base.Host
		}
		if na, ok := c.creds.Lookup(lookup); ok && !na.IsZero() {
			a, src = na, AuthNode
		}
	}
	if a.IsZero() {
		return creds{}
	}
	return creds{auth: a, source: src, identity: c.identifiers.Of(a)}
}

// basicAuthorization is the Authorization header for a Basic challenge,
// or "" if a has no username and password.
func basicAuthorization(a credentials.Auth) string {
	if a.Kind() != "basic" {
		return ""
	}
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(a.Username+":"+a.Password))
}
