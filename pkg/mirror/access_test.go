package mirror

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"

	"nodecache/internal/registrytest"
	"nodecache/pkg/credentials"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/upstream"
)

// A registry with token auth, as Docker Hub and GHCR have: alice may pull
// private/app, bob may pull nothing private, and anyone may pull public/*.
var tokenUsers = map[string]string{"alice": "alice-secret", "bob": "bob-secret"}

func privateRegistry() []registrytest.Option {
	return []registrytest.Option{registrytest.WithTokenAuth(tokenUsers,
		registrytest.Allow("alice", "private/app"),
		registrytest.Allow(registrytest.Anonymous, "public/*"))}
}

// resolverAs returns containerd's resolver pointed at nodecache alone (no
// fallback to upstream, so every byte comes through nodecache), answering
// nodecache's challenge with user's credentials the way the CRI plugin
// answers with a pod's pull secret. user "" sends none.
func resolverAs(t *testing.T, e *env, user string) remotes.Resolver {
	t.Helper()
	dir := t.TempDir()
	hostsToml := fmt.Sprintf("server = %q\ncapabilities = [\"pull\", \"resolve\"]\n", e.srv.URL)
	if err := os.MkdirAll(filepath.Join(dir, e.up.Host()), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, e.up.Host(), "hosts.toml"), []byte(hostsToml), 0o644); err != nil {
		t.Fatal(err)
	}
	return docker.NewResolver(docker.ResolverOptions{
		Hosts: config.ConfigureHosts(context.Background(), config.HostOptions{
			HostDir: config.HostDirFromRoot(dir),
			Credentials: func(string) (string, string, error) {
				return user, tokenUsers[user], nil
			},
		}),
	})
}

// getAs fetches path from nodecache with Basic credentials (none if user
// is "") and reads the body to its end: the last byte of a fill arrives
// once it is committed.
func getAs(t *testing.T, e *env, path, user, pass string) *http.Response {
	t.Helper()
	resp, _ := getWith(t, e.url(path), user, pass)
	return resp
}

// TestPrivateLayerOnlyForAuthorizedClients is the no-leak promise: a
// private image pulled through nodecache with alice's pull secret stays
// on disk, yet nobody else gets a byte of it, under its own repository
// or any other, until upstream confirms their authority.
func TestPrivateLayerOnlyForAuthorizedClients(t *testing.T) {
	e := newEnv(t, privateRegistry())
	img := e.up.PushSingleImage(t, "private/app", "v1", 64<<10, 128<<10)
	e.up.PushSingleImage(t, "public/base", "v1", 1000)
	ref := e.up.Host() + "/private/app:v1"
	ctx := context.Background()

	if _, err := pullAll(ctx, resolverAs(t, e, ""), ref); err == nil {
		t.Fatal("an anonymous client pulled the private image")
	}
	if n, err := pullAll(ctx, resolverAs(t, e, "alice"), ref); err != nil || n != 4 {
		t.Fatalf("alice's pull: %d objects, %v", n, err)
	}
	layer := img.Layers["linux/amd64"][0]
	if info, err := e.store.Stat(layer); err != nil || info.Public {
		t.Fatalf("the layer is not stored as private: %+v, %v", info, err)
	}
	gets := e.up.BlobGets(layer)

	for _, c := range []struct {
		name, repo, user, pass string
	}{
		{"anonymous", "private/app", "", ""},
		{"anonymous, under a public repository", "public/base", "", ""},
		{"bob, whom upstream refuses", "private/app", "bob", "bob-secret"},
		{"bob, under a public repository", "public/base", "bob", "bob-secret"},
		{"a wrong password", "private/app", "alice", "guess"},
	} {
		// With ns, and with the registry in the path: the same check.
		for _, url := range []string{
			e.url("/v2/" + c.repo + "/blobs/" + layer.String()),
			e.srv.URL + "/v2/" + e.up.Host() + "/" + c.repo + "/blobs/" + layer.String(),
		} {
			resp, _ := getWith(t, url, c.user, c.pass)
			if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("Www-Authenticate"), "Basic") {
				t.Errorf("%s, %s: status %d, WWW-Authenticate %q; want 401 with a Basic challenge",
					c.name, url, resp.StatusCode, resp.Header.Get("Www-Authenticate"))
			}
		}
	}
	if resp, _ := getWith(t, e.srv.URL+"/v2/"+e.up.Host()+"/private/app/blobs/"+layer.String(), "alice", "alice-secret"); resp.StatusCode != http.StatusOK {
		t.Errorf("alice, the registry in the path: status %d", resp.StatusCode)
	}
	if resp := getAs(t, e, "/v2/private/app/blobs/"+layer.String(), "alice", "alice-secret"); resp.StatusCode != http.StatusOK {
		t.Errorf("alice again: status %d", resp.StatusCode)
	}
	if n := e.up.BlobGets(layer); n != gets {
		t.Errorf("upstream blob GETs went from %d to %d: the cached layer was downloaded again", gets, n)
	}

	// A restart keeps the mark: the store reads it back from the file.
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
	store, err := diskstore.Open(e.store.Root())
	if err != nil {
		t.Fatal(err)
	}
	e2 := newEnvOn(t, store, privateRegistry())
	e2.up.PushSingleImage(t, "public/base", "v1", 1000)
	if resp := getAs(t, e2, "/v2/public/base/blobs/"+layer.String(), "", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("after a restart, anonymous: status %d, want 401", resp.StatusCode)
	}
}

// TestPublicContentForEveryone: what upstream serves anonymously is served
// to any client, with or without credentials, and a private entry that
// upstream turns out to serve anonymously becomes public.
func TestPublicContentForEveryone(t *testing.T) {
	e := newEnv(t, privateRegistry())
	img := e.up.PushSingleImage(t, "public/base", "v1", 1000)
	if n, err := pullAll(context.Background(), resolverAs(t, e, ""), e.up.Host()+"/public/base:v1"); err != nil || n != 3 {
		t.Fatalf("anonymous pull: %d objects, %v", n, err)
	}
	layer := img.Layers["linux/amd64"][0]
	if info, err := e.store.Stat(layer); err != nil || !info.Public {
		t.Fatalf("an anonymously pulled layer is not public: %+v, %v", info, err)
	}
	if resp := getAs(t, e, "/v2/public/base/blobs/"+layer.String(), "bob", "bob-secret"); resp.StatusCode != http.StatusOK {
		t.Errorf("bob: status %d", resp.StatusCode)
	}

	// Fetched by alice with credentials under private/app, yet public
	// under public/base: the first anonymous request confirms and marks it.
	shared := registrytest.Random(11, 5000)
	d := e.up.PushBlob(t, "private/app", shared)
	e.up.PushBlob(t, "public/base", shared)
	if resp := getAs(t, e, "/v2/private/app/blobs/"+d.String(), "alice", "alice-secret"); resp.StatusCode != http.StatusOK {
		t.Fatalf("alice: status %d", resp.StatusCode)
	}
	if info, _ := e.store.Stat(d); info.Public {
		t.Fatal("a blob fetched with credentials is public")
	}
	if resp := getAs(t, e, "/v2/public/base/blobs/"+d.String(), "", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("anonymous under the public repository: status %d", resp.StatusCode)
	}
	if info, _ := e.store.Stat(d); !info.Public {
		t.Error("upstream served it anonymously, but the entry stayed private")
	}
}

// staticCreds is the node's own credentials for one registry.
type staticCreds struct {
	registry string
	auth     credentials.Auth
}

func (c staticCreds) Lookup(r string) (credentials.Auth, bool) { return c.auth, r == c.registry }

// TestNodeCredentialsCoverEveryClient: with credentials of its own for
// the registry, nodecache pulls private images for clients that send
// none, but still only under repositories those credentials can read.
func TestNodeCredentialsCoverEveryClient(t *testing.T) {
	store, err := diskstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// The registry's address is known only once it runs: the source is
	// filled in after, before any request.
	var src staticCreds
	e := newEnvClient(t, store, privateRegistry(), []upstream.Option{upstream.WithCredentials(&src)})
	src.registry, src.auth = e.up.Host(), credentials.Auth{Username: "alice", Password: "alice-secret"}
	img := e.up.PushSingleImage(t, "private/app", "v1", 4000)
	e.up.PushSingleImage(t, "public/base", "v1", 1000)
	if n, err := pullAll(context.Background(), resolverAs(t, e, ""), e.up.Host()+"/private/app:v1"); err != nil || n != 3 {
		t.Fatalf("anonymous client, node credentials: %d objects, %v", n, err)
	}
	layer := img.Layers["linux/amd64"][0]
	if resp := getAs(t, e, "/v2/public/base/blobs/"+layer.String(), "", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the private layer under a public repository: status %d, want 401", resp.StatusCode)
	}
}

// TestNoJoiningAPrivateFill: a client without credentials that asks for a
// digest while alice's fill of it is still streaming gets a challenge, not
// a share of her download.
func TestNoJoiningAPrivateFill(t *testing.T) {
	e := newEnv(t, privateRegistry())
	data := registrytest.Random(12, 1<<20)
	d := e.up.PushBlob(t, "private/app", data)
	rest := make(chan struct{})
	e.up.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		// Unless the token is alice's the registry itself answers (401);
		// for her, the body is held after its first quarter.
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+d.String()) || tokenSubject(r) != "alice" {
			return false
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.Write(data[:len(data)/4])
		w.(http.Flusher).Flush()
		<-rest
		w.Write(data[len(data)/4:])
		return true
	})
	req, _ := http.NewRequest(http.MethodGet, e.url("/v2/private/app/blobs/"+d.String()), nil)
	req.SetBasicAuth("alice", "alice-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("alice: status %d", resp.StatusCode)
	}
	if e.store.Filling(d) == nil {
		t.Fatal("no fill in progress")
	}
	if resp := getAs(t, e, "/v2/private/app/blobs/"+d.String(), "", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous during alice's fill: status %d, want 401", resp.StatusCode)
	}
	close(rest)
	// Read alice's answer to its end: the last byte waits for the commit,
	// so the fill is done with the store's directory before it is removed.
	if b, err := io.ReadAll(resp.Body); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("alice: %d bytes, %v", len(b), err)
	}
}

// tokenSubject returns the user a request's bearer token was minted for.
// The test registry checks the signature; this only reads the claim.
func tokenSubject(r *http.Request) string {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	parts := strings.Split(tok, ".")
	if !ok || len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var claims struct {
		Subject string `json:"sub"`
	}
	json.Unmarshal(payload, &claims)
	return claims.Subject
}

// TestBasicAuthRegistryThroughNodecache: a registry with plain htpasswd
// Basic auth (no token server). nodecache challenges a client without
// credentials and passes the client's own upstream.
func TestBasicAuthRegistryThroughNodecache(t *testing.T) {
	e := newEnv(t, []registrytest.Option{registrytest.WithBasicAuth(map[string]string{"alice": "alice-secret"})})
	img := e.up.PushSingleImage(t, "team/app", "v1", 2000)
	ref := e.up.Host() + "/team/app:v1"
	if _, err := pullAll(context.Background(), resolverAs(t, e, ""), ref); err == nil {
		t.Fatal("a client without credentials pulled from a Basic-auth registry")
	}
	if n, err := pullAll(context.Background(), resolverAs(t, e, "alice"), ref); err != nil || n != 3 {
		t.Fatalf("alice: %d objects, %v", n, err)
	}
	layer := img.Layers["linux/amd64"][0]
	if resp := getAs(t, e, "/v2/team/app/blobs/"+layer.String(), "", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous after alice's pull: status %d, want 401", resp.StatusCode)
	}
}

// TestCredentialsAfterAnAnonymousFlight: alice asks for a private blob
// while an anonymous request for it is waiting on upstream. The shared
// flight fails for want of credentials, but alice has some: she is not
// sent the anonymous client's 401, she gets the blob.
func TestCredentialsAfterAnAnonymousFlight(t *testing.T) {
	e := newEnv(t, privateRegistry())
	data := registrytest.Random(13, 100_000)
	d := e.up.PushBlob(t, "private/app", data)
	anonymousAsked := make(chan struct{})
	hold := make(chan struct{})
	var first sync.Once
	e.up.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+d.String()) && tokenSubject(r) != "alice" {
			first.Do(func() {
				close(anonymousAsked)
				<-hold // then the registry refuses it
			})
		}
		return false
	})
	url := e.url("/v2/private/app/blobs/" + d.String())
	anonymous := make(chan int, 1)
	go func() {
		resp, err := http.Get(url)
		if err != nil {
			anonymous <- 0
			return
		}
		resp.Body.Close()
		anonymous <- resp.StatusCode
	}()
	<-anonymousAsked
	<-e.arrived // the anonymous request
	alice := make(chan *http.Response, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.SetBasicAuth("alice", "alice-secret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			alice <- nil
			return
		}
		alice <- resp
	}()
	<-e.arrived // alice's, which joins the anonymous request's flight
	close(hold)
	if code := <-anonymous; code != http.StatusUnauthorized {
		t.Errorf("anonymous: status %d, want 401", code)
	}
	resp := <-alice
	if resp == nil {
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || err != nil || !bytes.Equal(body, data) {
		t.Fatalf("alice: status %d, %d bytes, %v", resp.StatusCode, len(body), err)
	}
}

// TestNodeCredentialsReload: the node's credentials file is replaced while
// nodecache runs, and the next pull uses the new credentials, with no
// restart.
func TestNodeCredentialsReload(t *testing.T) {
	file := filepath.Join(t.TempDir(), "credentials.toml")
	// The file names the registry, whose address is known only once it
	// runs: the credentials store is opened after the env, and the
	// upstream client reaches it through src.
	var src *credentials.Store
	store, err := diskstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvClient(t, store, privateRegistry(),
		[]upstream.Option{upstream.WithCredentials(sourceFunc(func(r string) (credentials.Auth, bool) { return src.Lookup(r) }))})
	e.up.PushSingleImage(t, "private/app", "v1", 3000)
	host := e.up.Host()
	write := func(user string) {
		t.Helper()
		text := fmt.Sprintf("[registries.%q]\nusername = %q\npassword = %q\n", host, user, tokenUsers[user])
		if err := os.WriteFile(file+".tmp", []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(file+".tmp", file); err != nil {
			t.Fatal(err)
		}
	}
	write("bob")
	reloaded := make(chan error, 16)
	src, err = credentials.Open(credentials.Files{CredentialsFile: file},
		credentials.WithDebounce(credentials.NoDebounce), credentials.OnReload(func(err error) { reloaded <- err }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-reloaded // Run reads the files once its watches are set

	ref := host + "/private/app:v1"
	if _, err := pullAll(context.Background(), resolverAs(t, e, ""), ref); err == nil {
		t.Fatal("pulled with bob's credentials, which cannot read private/app")
	}
	write("alice")
	for {
		if err := <-reloaded; err != nil {
			t.Fatalf("reload: %v", err)
		}
		if a, _ := src.Lookup(host); a.Username == "alice" {
			break
		}
	}
	if n, err := pullAll(context.Background(), resolverAs(t, e, ""), ref); err != nil || n != 3 {
		t.Fatalf("after the reload: %d objects, %v", n, err)
	}
}

// sourceFunc adapts a function to credentials.Source.
type sourceFunc func(string) (credentials.Auth, bool)

func (f sourceFunc) Lookup(r string) (credentials.Auth, bool) { return f(r) }

// TestReferrersGrantNothing: a referrers list answers 200 for any digest,
// so alice asking for the referrers of bob's private layer under her own
// repository must not make that layer hers.
func TestReferrersGrantNothing(t *testing.T) {
	e := newEnv(t, []registrytest.Option{registrytest.WithTokenAuth(tokenUsers,
		registrytest.Allow("alice", "private/app"),
		registrytest.Allow("bob", "private/other"))})
	data := registrytest.Random(14, 5000)
	d := e.up.PushBlob(t, "private/other", data)
	e.up.PushSingleImage(t, "private/app", "v1", 1000)
	// As registries that implement the referrers API do (the test
	// registry does not): an empty index for any digest, to anyone who may
	// read the repository.
	e.up.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/referrers/") {
			return false
		}
		if tokenSubject(r) != "alice" {
			w.Header().Set("Www-Authenticate", fmt.Sprintf(`Bearer realm=%q,service=%q,scope="repository:private/app:pull"`,
				e.up.TokenRealm(), registrytest.TokenService))
			w.WriteHeader(http.StatusUnauthorized)
			return true
		}
		w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
		w.Header().Set("Docker-Content-Digest", d.String())
		io.WriteString(w, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)
		return true
	})
	if resp := getAs(t, e, "/v2/private/other/blobs/"+d.String(), "bob", "bob-secret"); resp.StatusCode != http.StatusOK {
		t.Fatalf("bob: status %d", resp.StatusCode)
	}
	if resp := getAs(t, e, "/v2/private/app/referrers/"+d.String(), "alice", "alice-secret"); resp.StatusCode != http.StatusOK {
		t.Fatalf("referrers under alice's repository: status %d, want 200", resp.StatusCode)
	}
	if resp := getAs(t, e, "/v2/private/app/blobs/"+d.String(), "alice", "alice-secret"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("alice got bob's layer under her repository: status %d, want 401", resp.StatusCode)
	}
}
