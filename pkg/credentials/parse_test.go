package credentials

import (
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestDockerConfig(t *testing.T) {
	p := writeFile(t, t.TempDir(), "config.json", `{
  "auths": {
    "https://index.docker.io/v1/": {"auth": "`+b64("hubuser:hubpass")+`"},
    "GHCR.io": {"username": "bot", "password": "ghpass"},
    "https://myreg.azurecr.io": {"username": "00000000-0000-0000-0000-000000000000", "identitytoken": "refresh"},
    "registry.example.com:5000/v2/": {"registrytoken": "bearer"},
    "quay.io": {},
    "http://gcr.io": {"auth": "`+b64("_json_key:{\"k\":\"a:b\"}")+`"}
  },
  "credsStore": "desktop",
  "credHelpers": {"public.ecr.aws": "ecr-login"},
  "psFormat": "table"
}`)
	s, err := Load(Files{DockerConfig: p})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Auth{
		"docker.io":                 {Username: "hubuser", Password: "hubpass"},
		"ghcr.io":                   {Username: "bot", Password: "ghpass"},
		"myreg.azurecr.io":          {Username: "00000000-0000-0000-0000-000000000000", IdentityToken: "refresh"},
		"registry.example.com:5000": {RegistryToken: "bearer"},
		"gcr.io":                    {Username: "_json_key", Password: `{"k":"a:b"}`},
	}
	if got := s.Registries(); !slices.Equal(got, sortedKeys(want)) {
		t.Errorf("Registries() = %v, want %v", got, sortedKeys(want))
	}
	for host, w := range want {
		if got, ok := s.Lookup(host); !ok || got != w {
			t.Errorf("Lookup(%q) = %#v, %v", host, got, ok)
		}
	}
	// Lookups are normalised like the keys.
	for _, q := range []string{"index.docker.io", "registry-1.docker.io", "Docker.IO", "https://index.docker.io/v1/"} {
		if got, ok := s.Lookup(q); !ok || got.Username != "hubuser" {
			t.Errorf("Lookup(%q) = %v, %v; want docker.io's entry", q, got, ok)
		}
	}
	if _, ok := s.Lookup("quay.io"); ok {
		t.Error("an empty placeholder entry (credsStore) gave credentials")
	}
	if _, ok := s.Lookup("public.ecr.aws"); ok {
		t.Error("a credHelpers entry gave credentials")
	}
}

func sortedKeys(m map[string]Auth) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// Two keys for one host: the bare host wins whatever the map order.
func TestDockerConfigDuplicateHost(t *testing.T) {
	p := writeFile(t, t.TempDir(), "config.json", `{"auths": {
		"https://index.docker.io/v1/": {"username": "a", "password": "1"},
		"docker.io": {"username": "b", "password": "2"},
		"registry-1.docker.io": {"username": "c", "password": "3"}}}`)
	for range 20 {
		s, err := Load(Files{DockerConfig: p})
		if err != nil {
			t.Fatal(err)
		}
		if a, _ := s.Lookup("docker.io"); a.Username != "b" {
			t.Fatalf("docker.io = %v, want the entry under the bare key", a)
		}
	}
}

func TestDockerConfigErrors(t *testing.T) {
	tests := []struct {
		name, content, registry, want string
	}{
		{"not json", `{"auths": {"a.io": {"password": hunter2}}}`, "", "line 1, column"},
		{"not json second line", "{\"auths\":\n {\"a.io\" hunter2}}", "", "line 2, column"},
		{"empty", " \n", "", "empty"},
		{"bad base64", `{"auths": {"a.io": {"auth": "hunter2!"}}}`, "a.io", "base64"},
		{"no colon", `{"auths": {"a.io": {"auth": "` + b64("hunter2") + `"}}}`, "a.io", "user:password"},
		{"wrong type", `{"auths": {"a.io": {"password": 7}}}`, "", "password"},
		{"no host", `{"auths": {"https://": {"username": "u", "password": "hunter2"}}}`, "https://", "no registry host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, t.TempDir(), "config.json", tt.content)
			_, err := Load(Files{DockerConfig: p})
			checkFileError(t, err, p, tt.registry, tt.want)
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

// checkFileError checks that err names the file, the registry (if any) and
// the problem, and quotes no secret: every test secret contains "hunter2",
// and JSON would quote its first character as 'h'.
func checkFileError(t *testing.T, err error, path, registry, want string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, s := range []string{path, registry, want} {
		if !strings.Contains(msg, s) {
			t.Errorf("error %q does not contain %q", msg, s)
		}
	}
	for _, leak := range []string{"hunter2", "'h'", "U+0068", "unter"} {
		if strings.Contains(msg, leak) {
			t.Errorf("error %q shows part of a secret (%q)", msg, leak)
		}
	}
}

func TestMissingFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "nope.toml")
	for _, f := range []Files{{DockerConfig: p}, {CredentialsFile: p}} {
		_, err := Load(f)
		checkFileError(t, err, p, "", "no such file")
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error %v is not fs.ErrNotExist", err)
		}
	}
}

const (
	goodTOML = `
[registries."ghcr.io"]
username = "bot"
password = "ghpass"

[registries."registry.example.com:5000"]
token = "bearer"

[registries."Index.Docker.IO"]
identitytoken = "refresh"
`
	goodYAML = `
registries:
  ghcr.io:
    username: bot
    password: ghpass
  registry.example.com:5000:
    token: bearer
  Index.Docker.IO:
    identitytoken: refresh
`
)

func TestCredentialsFile(t *testing.T) {
	want := map[string]Auth{
		"ghcr.io":                   {Username: "bot", Password: "ghpass"},
		"registry.example.com:5000": {RegistryToken: "bearer"},
		"docker.io":                 {IdentityToken: "refresh"},
	}
	for _, tt := range []struct{ name, content string }{
		{"creds.toml", goodTOML},
		{"creds.yaml", goodYAML},
		{"creds.yml", goodYAML},
		{"CREDS.TOML", goodTOML},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, t.TempDir(), tt.name, tt.content)
			s, err := Load(Files{CredentialsFile: p})
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Registries(); !slices.Equal(got, sortedKeys(want)) {
				t.Errorf("Registries() = %v, want %v", got, sortedKeys(want))
			}
			for host, w := range want {
				if got, ok := s.Lookup(host); !ok || got != w {
					t.Errorf("Lookup(%q) = %#v, %v", host, got, ok)
				}
			}
		})
	}
}

func TestCredentialsFileErrors(t *testing.T) {
	tests := []struct {
		name, toml, yaml, registry, want string
	}{
		{"unknown key",
			"[registries.\"a.io\"]\nusername = \"u\"\npasword = \"hunter2\"\n",
			"registries:\n  a.io:\n    username: u\n    pasword: hunter2\n",
			"", "pasword"},
		{"unknown top-level key",
			"[registry.\"a.io\"]\ntoken = \"hunter2\"\n",
			"registry:\n  a.io:\n    token: hunter2\n",
			"", "registry"},
		{"token and password",
			"[registries.\"a.io\"]\nusername = \"u\"\npassword = \"hunter2\"\ntoken = \"hunter2x\"\n",
			"registries:\n  a.io: {username: u, password: hunter2, token: hunter2x}\n",
			"a.io", "both token and password"},
		{"token and identitytoken",
			"[registries.\"a.io\"]\nidentitytoken = \"hunter2\"\ntoken = \"hunter2x\"\n",
			"registries:\n  a.io: {identitytoken: hunter2, token: hunter2x}\n",
			"a.io", "more than one"},
		{"username without password",
			"[registries.\"a.io\"]\nusername = \"u\"\n",
			"registries:\n  a.io: {username: u}\n",
			"a.io", "username without password"},
		{"password without username",
			"[registries.\"a.io\"]\npassword = \"hunter2\"\n",
			"registries:\n  a.io: {password: hunter2}\n",
			"a.io", "password without username"},
		{"empty entry",
			"[registries.\"a.io\"]\n",
			"registries:\n  a.io: {}\n",
			"a.io", "no credential"},
		{"path in name",
			"[registries.\"a.io/org\"]\ntoken = \"hunter2\"\n",
			"registries:\n  a.io/org: {token: hunter2}\n",
			"a.io/org", "host[:port]"},
		{"same host twice",
			"[registries.\"docker.io\"]\ntoken = \"hunter2\"\n[registries.\"index.docker.io\"]\ntoken = \"hunter2x\"\n",
			"registries:\n  docker.io: {token: hunter2}\n  index.docker.io: {token: hunter2x}\n",
			"docker.io", "same registry as \"index.docker.io\""},
		{"syntax",
			"[registries.\"a.io\"]\ntoken = hunter2\n",
			"registries:\n  a.io: {token: hunter2\n",
			"", "line 2"},
		{"tagged value",
			"[registries.\"a.io\"]\ntoken = 'hunter2\n",
			"registries:\n  a.io:\n    token: !!int hunter2\n",
			"", ""},
		{"wrong type",
			"[registries.\"a.io\"]\nusername = \"u\"\npassword = 12345\n",
			"registries:\n- a.io\n",
			"", "registries"},
		{"empty", "\n", "  \n", "", "empty"},
	}
	for _, tt := range tests {
		for ext, content := range map[string]string{".toml": tt.toml, ".yaml": tt.yaml} {
			t.Run(tt.name+ext, func(t *testing.T) {
				p := writeFile(t, t.TempDir(), "creds"+ext, content)
				_, err := Load(Files{CredentialsFile: p})
				checkFileError(t, err, p, tt.registry, tt.want)
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("error %v does not wrap ErrInvalid", err)
				}
			})
		}
	}
	t.Run("extension", func(t *testing.T) {
		p := writeFile(t, t.TempDir(), "creds.json", `{}`)
		_, err := Load(Files{CredentialsFile: p})
		checkFileError(t, err, p, "", ".toml, .yaml or .yml")
	})
}

// The credentials file wins over the Docker config for a registry in both.
func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	dc := writeFile(t, dir, "config.json", `{"auths": {
		"ghcr.io": {"username": "docker", "password": "d"},
		"quay.io": {"username": "docker", "password": "q"}}}`)
	cf := writeFile(t, dir, "creds.toml", goodTOML)
	s, err := Load(Files{DockerConfig: dc, CredentialsFile: cf})
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := s.Lookup("ghcr.io"); a.Username != "bot" {
		t.Errorf("ghcr.io = %v, want the credentials file's entry", a)
	}
	if a, _ := s.Lookup("quay.io"); a.Username != "docker" {
		t.Errorf("quay.io = %v, want the Docker config's entry", a)
	}
	if s.Len() != 4 {
		t.Errorf("Len() = %d, want 4", s.Len())
	}
	// An error in either file fails the whole load.
	writeFile(t, dir, "creds.toml", "[registries.\"a.io\"]\nusername = \"u\"\n")
	if _, err := Load(Files{DockerConfig: dc, CredentialsFile: cf}); err == nil {
		t.Error("a bad credentials file was accepted alongside a good Docker config")
	}
}

func TestNoFiles(t *testing.T) {
	s, err := Load(Files{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Lookup("docker.io"); ok || s.Len() != 0 {
		t.Error("an empty Files gave credentials")
	}
}
