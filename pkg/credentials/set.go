package credentials

import (
	"io/fs"
	"maps"
	"os"
	"slices"
)

// Files names the sources of credentials. Either may be empty.
type Files struct {
	// DockerConfig is a Docker config.json (--docker-config); only its
	// "auths" are read.
	DockerConfig string
	// CredentialsFile is nodecache's own file (--credentials-file), TOML
	// or YAML by extension. For a registry in both files, it wins: it is
	// the file written for nodecache, the Docker config is often shared.
	CredentialsFile string
}

// paths returns the files that are set.
func (f Files) paths() []string {
	var ps []string
	for _, p := range []string{f.DockerConfig, f.CredentialsFile} {
		if p != "" {
			ps = append(ps, p)
		}
	}
	return ps
}

// Set is the credentials read from Files at one moment. It is immutable
// and safe for concurrent use.
type Set struct {
	byHost map[string]Auth
}

// Load reads and parses the files once. An error names the file and what
// is wrong with it; a missing file is an error.
func Load(f Files) (*Set, error) {
	s := &Set{byHost: map[string]Auth{}}
	if f.DockerConfig != "" {
		m, err := readParse(f.DockerConfig, parseDockerConfig)
		if err != nil {
			return nil, err
		}
		maps.Copy(s.byHost, m)
	}
	if f.CredentialsFile != "" {
		m, err := readParse(f.CredentialsFile, parseCredentialsFile)
		if err != nil {
			return nil, err
		}
		maps.Copy(s.byHost, m) // after the Docker config, so it wins
	}
	return s, nil
}

func readParse(path string, parse func(string, []byte) (map[string]Auth, error)) (map[string]Auth, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		// The PathError's own message would repeat the path.
		if pe, ok := err.(*fs.PathError); ok {
			err = pe.Err
		}
		return nil, &FileError{Path: path, Err: err}
	}
	return parse(path, data)
}

// Lookup returns the credentials for a registry host. The name is
// normalised as the files' keys are, so "index.docker.io" and
// "https://index.docker.io/v1/" find docker.io's entry.
func (s *Set) Lookup(registry string) (Auth, bool) {
	if s == nil {
		return Auth{}, false
	}
	a, ok := s.byHost[normalize(registry)]
	return a, ok
}

// Registries returns the hosts that have credentials, sorted.
func (s *Set) Registries() []string {
	if s == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(s.byHost))
}

// Len is the number of registries that have credentials.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.byHost)
}

// Equal reports whether s and o hold the same credentials.
func (s *Set) Equal(o *Set) bool {
	return maps.Equal(s.mapOrNil(), o.mapOrNil())
}

func (s *Set) mapOrNil() map[string]Auth {
	if s == nil {
		return nil
	}
	return s.byHost
}
