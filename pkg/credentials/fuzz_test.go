package credentials

import (
	"testing"
)

// checkParsed holds for every successful parse: hosts are normalised and
// every entry carries a credential.
func checkParsed(t *testing.T, m map[string]Auth) {
	for host, a := range m {
		if host == "" || host != normalize(host) {
			t.Errorf("host %q is not normalised", host)
		}
		if a.IsZero() {
			t.Errorf("host %q has an empty Auth", host)
		}
	}
}

func FuzzDockerConfig(f *testing.F) {
	f.Add([]byte(`{"auths": {"https://index.docker.io/v1/": {"auth": "dTpw"}}}`))
	f.Add([]byte(`{"auths": {"a.io": {"username": "u", "password": "p"}, "b.io": {}}}`))
	f.Add([]byte(`{"auths": {"a.io": {"identitytoken": "i"}, "b.io/v2/": {"registrytoken": "r"}}, "credsStore": "x"}`))
	f.Add([]byte(`{"auths": {"a.io": {"auth": "Og=="}}}`))
	f.Add([]byte(`{"auths": {"": {"auth": "dTpw"}}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseDockerConfig("config.json", data)
		if err == nil {
			checkParsed(t, m)
		}
	})
}

func FuzzCredentialsFile(f *testing.F) {
	f.Add([]byte(goodTOML), false)
	f.Add([]byte(goodYAML), true)
	f.Add([]byte("[registries.\"a.io\"]\nusername = \"u\"\n"), false)
	f.Add([]byte("registries:\n  a.io: {token: t, password: p}\n"), true)
	f.Add([]byte("registries:\n  a.io:\n    token: !!int x\n"), true)
	f.Add([]byte("registries = {}\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, isYAML bool) {
		name := "creds.toml"
		if isYAML {
			name = "creds.yaml"
		}
		m, err := parseCredentialsFile(name, data)
		if err != nil {
			return
		}
		checkParsed(t, m)
		for host, a := range m {
			n := 0
			for _, s := range []string{a.Password, a.RegistryToken, a.IdentityToken} {
				if s != "" {
					n++
				}
			}
			if n != 1 || (a.Username == "") != (a.Password == "") {
				t.Errorf("host %q: ambiguous or partial entry accepted (%v)", host, a)
			}
		}
	})
}
