package credentials

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"sigs.k8s.io/yaml"
)

// ErrInvalid matches (errors.Is) every error about a file's content, as
// opposed to an error reading it.
var ErrInvalid = errors.New("invalid credentials file")

// FileError is a credentials source that cannot be used. Its message
// names the file and, when the problem is one entry, the registry; it
// never contains a password or token.
type FileError struct {
	Path     string
	Registry string // "" when the problem is not about one entry
	Err      error

	invalid bool // the content is wrong, rather than the file unreadable
}

func (e *FileError) Error() string {
	if e.Registry == "" {
		return fmt.Sprintf("credentials: %s: %v", e.Path, e.Err)
	}
	return fmt.Sprintf("credentials: %s: registry %q: %v", e.Path, e.Registry, e.Err)
}

func (e *FileError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrInvalid) true for bad content.
func (e *FileError) Is(target error) bool { return e.invalid && target == ErrInvalid }

// invalid returns a FileError for bad content in path.
func invalid(path, registry, format string, args ...any) error {
	return &FileError{Path: path, Registry: registry, Err: fmt.Errorf(format, args...), invalid: true}
}

// normalize turns a Docker config key or a lookup into the registry host
// the rest of nodecache uses: no scheme, no path, lower case, and Docker
// Hub's aliases folded into docker.io. Docker itself writes Hub's key as
// "https://index.docker.io/v1/".
func normalize(key string) string {
	if i := strings.Index(key, "://"); i >= 0 {
		key = key[i+len("://"):]
	}
	if i := strings.IndexByte(key, '/'); i >= 0 {
		key = key[:i]
	}
	key = strings.ToLower(key)
	switch key {
	case "index.docker.io", "registry-1.docker.io":
		return "docker.io"
	}
	return key
}

// dockerConfig is the part of a Docker config.json that nodecache reads.
// credsStore and credHelpers are ignored on purpose: they name programs
// to run, and the daemon runs no helper programs. Unknown fields are
// allowed because Docker keeps other settings in the same file.
type dockerConfig struct {
	Auths map[string]dockerEntry `json:"auths"`
}

type dockerEntry struct {
	Auth          string `json:"auth"`
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
	RegistryToken string `json:"registrytoken"`
}

// parseDockerConfig reads the auths of a Docker config file. Entries with
// no credential are skipped: Docker writes them as placeholders when a
// credential store holds the secret.
//
// When several keys name the same host (https://index.docker.io/v1/ and
// docker.io), a key that is the bare host wins, then the first in sorted
// order, so the result does not depend on map order.
func parseDockerConfig(path string, data []byte) (map[string]Auth, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, invalid(path, "", "file is empty")
	}
	var cfg dockerConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, invalid(path, "", "%s", jsonProblem(data, err))
	}
	keys := make([]string, 0, len(cfg.Auths))
	for k := range cfg.Auths {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		bi, bj := keys[i] == normalize(keys[i]), keys[j] == normalize(keys[j])
		if bi != bj {
			return bi
		}
		return keys[i] < keys[j]
	})
	out := make(map[string]Auth, len(keys))
	for _, k := range keys {
		host := normalize(k)
		if host == "" {
			return nil, invalid(path, k, "key names no registry host")
		}
		a, err := dockerAuth(cfg.Auths[k])
		if err != nil {
			return nil, invalid(path, k, "%v", err)
		}
		if _, seen := out[host]; seen || a.IsZero() {
			continue
		}
		out[host] = a
	}
	return out, nil
}

// dockerAuth decodes one auths entry. As in Docker, "auth" (base64 of
// user:password) overrides username and password.
func dockerAuth(e dockerEntry) (Auth, error) {
	a := Auth{
		Username:      e.Username,
		Password:      e.Password,
		IdentityToken: e.IdentityToken,
		RegistryToken: e.RegistryToken,
	}
	if e.Auth == "" {
		return a, nil
	}
	raw, err := base64.StdEncoding.DecodeString(e.Auth)
	if err != nil {
		return Auth{}, errors.New(`"auth" is not valid base64`)
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	if !ok {
		return Auth{}, errors.New(`"auth" does not decode to user:password`)
	}
	a.Username, a.Password = user, strings.Trim(pass, "\x00")
	return a, nil
}

// jsonProblem describes a JSON error by position only: a syntax error's
// message quotes a character of the file, which may be part of a secret.
func jsonProblem(data []byte, err error) string {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		line, col := position(data, syn.Offset)
		return fmt.Sprintf("not valid JSON at line %d, column %d", line, col)
	}
	// Type errors name the field and the JSON kind, not the value.
	return strings.TrimPrefix(err.Error(), "json: ")
}

// position turns a byte offset into a 1-based line and column.
func position(data []byte, offset int64) (line, col int) {
	offset = min(max(offset, 0), int64(len(data)))
	before := data[:offset]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(offset) - (bytes.LastIndexByte(before, '\n') + 1)
	return line, max(col, 1)
}

// credFile is the credentials file: TOML or YAML of the same shape.
type credFile struct {
	Registries map[string]credEntry `json:"registries" toml:"registries"`
}

type credEntry struct {
	Username      string `json:"username" toml:"username"`
	Password      string `json:"password" toml:"password"`
	Token         string `json:"token" toml:"token"`
	IdentityToken string `json:"identitytoken" toml:"identitytoken"`
}

// parseCredentialsFile reads a credentials file, TOML or YAML by its
// extension. Unlike the Docker config, it is nodecache's own format, so
// it is strict: unknown keys, empty or ambiguous entries, and registry
// names with a scheme or path are errors.
func parseCredentialsFile(path string, data []byte) (map[string]Auth, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		// An empty file is far more often a writer caught half-way
		// than a wish to drop every credential.
		return nil, invalid(path, "", "file is empty")
	}
	var f credFile
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".toml":
		if err := decodeTOML(data, &f); err != nil {
			return nil, invalid(path, "", "%v", err)
		}
	case ".yaml", ".yml":
		if err := yaml.UnmarshalStrict(data, &f); err != nil {
			return nil, invalid(path, "", "%s", yamlProblem(err))
		}
	default:
		return nil, invalid(path, "", "unknown extension %q: want .toml, .yaml or .yml", ext)
	}
	out := make(map[string]Auth, len(f.Registries))
	given := make(map[string]string, len(f.Registries))
	for name, e := range f.Registries {
		if name == "" || strings.ContainsAny(name, "/ \t\r\n") {
			return nil, invalid(path, name, "not a registry host[:port] such as ghcr.io or localhost:5000")
		}
		a, err := credAuth(e)
		if err != nil {
			return nil, invalid(path, name, "%v", err)
		}
		host := normalize(name)
		if other, dup := given[host]; dup {
			a, b := min(name, other), max(name, other)
			return nil, invalid(path, a, "same registry as %q", b)
		}
		given[host] = name
		out[host] = a
	}
	return out, nil
}

// credAuth checks that an entry holds exactly one kind of credential.
func credAuth(e credEntry) (Auth, error) {
	kinds := 0
	for _, s := range []string{e.Password, e.Token, e.IdentityToken} {
		if s != "" {
			kinds++
		}
	}
	switch {
	case e.Token != "" && e.Password != "":
		return Auth{}, errors.New("both token and password set; give one")
	case kinds > 1:
		return Auth{}, errors.New("more than one of password, token and identitytoken set; give one")
	case e.Username != "" && e.Password == "":
		return Auth{}, errors.New("username without password")
	case e.Password != "" && e.Username == "":
		return Auth{}, errors.New("password without username")
	case kinds == 0:
		return Auth{}, errors.New("no credential: give username and password, token, or identitytoken")
	}
	return Auth{
		Username:      e.Username,
		Password:      e.Password,
		RegistryToken: e.Token,
		IdentityToken: e.IdentityToken,
	}, nil
}

// decodeTOML decodes strictly and describes errors without quoting the
// file: go-toml's messages may show the offending characters.
func decodeTOML(data []byte, v any) error {
	err := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields().Decode(v)
	var missing *toml.StrictMissingError
	if errors.As(err, &missing) {
		keys := make([]string, len(missing.Errors))
		for i := range missing.Errors {
			keys[i] = strconv.Quote(strings.Join(missing.Errors[i].Key(), "."))
		}
		return fmt.Errorf("unknown key %s", strings.Join(keys, ", "))
	}
	var dec *toml.DecodeError
	if errors.As(err, &dec) {
		line, col := dec.Position()
		if key := dec.Key(); len(key) > 0 {
			return fmt.Errorf("not valid at line %d, column %d (key %q)", line, col, strings.Join(key, "."))
		}
		return fmt.Errorf("not valid TOML at line %d, column %d", line, col)
	}
	return err
}

// backquoted matches the values YAML's messages quote (a tagged scalar it
// cannot decode: cannot decode !!str `...` as a !!int).
var backquoted = regexp.MustCompile("`[^`]*`")

// yamlProblem drops the conversion wrappers sigs.k8s.io/yaml adds and any
// quoted value from a YAML error.
func yamlProblem(err error) string {
	msg := err.Error()
	for _, p := range []string{"error converting YAML to JSON: ", "error unmarshaling JSON: ", "while decoding JSON: ", "json: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	return backquoted.ReplaceAllString(msg, "(value hidden)")
}
