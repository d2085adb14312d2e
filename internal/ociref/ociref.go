// Package ociref is the one home of the OCI distribution grammar this
// node speaks: repository names, tags, the digests it accepts and the
// kinds of pull-path route. Everything a client or a peer sends is checked
// here, once, where it enters.
//
// It does not parse URL paths (the mirror's router does) or talk HTTP.
package ociref

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors, tested with errors.Is.
var (
	ErrName   = errors.New("invalid repository name")
	ErrTag    = errors.New("invalid tag")
	ErrDigest = errors.New("invalid or unsupported digest")
)

// MaxNameLength is the distribution spec's limit on a repository name.
// The spec counts it with the registry host; we count the name alone,
// which is the stricter reading for the part we see.
const MaxNameLength = 255

// CheckName reports whether name is a repository name of the distribution
// spec, no longer than MaxNameLength, with an error wrapping ErrName if
// not. A name that passes is safe as a URL path segment.
func CheckName(name string) error {
	if len(name) > MaxNameLength {
		return fmt.Errorf("%w: longer than %d characters", ErrName, MaxNameLength)
	}
	if !validName(name) {
		return fmt.Errorf("%w: %q", ErrName, truncate(name))
	}
	return nil
}

// CheckTag reports whether tag is a tag of the distribution spec, with an
// error wrapping ErrTag if not.
func CheckTag(tag string) error {
	if !validTag(tag) {
		return fmt.Errorf("%w: %q", ErrTag, truncate(tag))
	}
	return nil
}

// Kind is the kind of a pull-path route. Its value is also the route's
// metric and log label.
type Kind string

// The route kinds.
const (
	KindBase      Kind = "base"      // /v2/
	KindManifests Kind = "manifests" // /v2/<name>/manifests/<tag or digest>
	KindBlobs     Kind = "blobs"     // /v2/<name>/blobs/<digest>
	KindTags      Kind = "tags"      // /v2/<name>/tags/list
	KindReferrers Kind = "referrers" // /v2/<name>/referrers/<digest>
)

// Path returns the kind's path segment after /v2/<name>/ ("tags/list"
// for KindTags) and "" for KindBase.
func (k Kind) Path() string {
	switch k {
	case KindBase:
		return ""
	case KindTags:
		return "tags/list"
	}
	return string(k)
}

// truncate keeps error messages short whatever a client sends.
func truncate(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

// maxTagLength is the distribution spec's limit on a tag.
const maxTagLength = 128

// validName matches the repository name grammar of the OCI distribution
// spec, ^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$:
// slash-separated lowercase components joined by '.', '_', '__' or
// dashes. It is written out rather than a regexp because every pull
// request checks its name, and this costs a tenth of the regexp without
// allocating.
func validName(name string) bool {
	for {
		i := strings.IndexByte(name, '/')
		if i < 0 {
			return validComponent(name)
		}
		if !validComponent(name[:i]) {
			return false
		}
		name = name[i+1:]
	}
}

// validComponent matches [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*.
func validComponent(c string) bool {
	if c == "" || !lowerAlnum(c[0]) || !lowerAlnum(c[len(c)-1]) {
		return false
	}
	for i := 0; i < len(c); {
		if lowerAlnum(c[i]) {
			i++
			continue
		}
		j := i
		for j < len(c) && !lowerAlnum(c[j]) {
			j++
		}
		if sep := c[i:j]; sep != "." && sep != "_" && sep != "__" && !allDashes(sep) {
			return false
		}
		i = j
	}
	return true
}

func lowerAlnum(b byte) bool { return 'a' <= b && b <= 'z' || '0' <= b && b <= '9' }

func allDashes(s string) bool {
	for i := range len(s) {
		if s[i] != '-' {
			return false
		}
	}
	return true
}

// validTag matches the tag grammar of the OCI distribution spec,
// ^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$, written out for the same reason
// as validName.
func validTag(tag string) bool {
	if tag == "" || len(tag) > maxTagLength || tag[0] == '.' || tag[0] == '-' {
		return false
	}
	for i := range len(tag) {
		b := tag[i]
		if !lowerAlnum(b) && !('A' <= b && b <= 'Z') && b != '_' && b != '.' && b != '-' {
			return false
		}
	}
	return true
}
