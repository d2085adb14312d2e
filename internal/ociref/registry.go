package ociref

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/distribution/reference"
)

// ErrRegistry is wrapped by CheckRegistry's errors.
var ErrRegistry = errors.New("invalid registry host")

// registryRE is the domain of an image reference, anchored: a host name
// or IPv4 address, or an IPv6 address in brackets, with an optional port.
var registryRE = regexp.MustCompile(`^` + reference.DomainRegexp.String() + `$`)

// CheckRegistry reports whether name is a registry host as image
// references spell it (docker.io, localhost:5000, 10.0.0.1:5000,
// [::1]:5000), with an error wrapping ErrRegistry if not.
func CheckRegistry(name string) error {
	if !registryRE.MatchString(name) {
		return fmt.Errorf("%w: %q", ErrRegistry, truncate(name))
	}
	return nil
}

// IsRegistryComponent reports whether c, the first component of a name,
// names a registry rather than a namespace, by the rule image references
// follow: it contains a '.' or a ':', or is localhost, and is a registry
// host. docker.io/library/alpine names a registry; library/alpine does
// not.
func IsRegistryComponent(c string) bool {
	// IndexByte, not ContainsAny: this runs on every request's path, and
	// ContainsAny builds its set of bytes on each call.
	return (c == "localhost" || strings.IndexByte(c, '.') >= 0 || strings.IndexByte(c, ':') >= 0) && CheckRegistry(c) == nil
}
