package upstream

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"nodecache/internal/ociref"
)

// newDistribution starts an in-memory distribution registry.
func newDistribution(t *testing.T) *httptest.Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			"inmemory": configuration.Parameters{},
			"maintenance": configuration.Parameters{
				"uploadpurging": map[any]any{"enabled": false},
			},
		},
	}
	app := handlers.NewApp(ctx, cfg)
	srv := httptest.NewServer(app)
	t.Cleanup(func() {
		srv.Close()
		_ = app.Shutdown()
		cancel()
	})
	return srv
}

// pushed is what pushRandomImage put in the registry.
type pushed struct {
	manifest  []byte
	mdigest   string
	mediaType string
	layer     []byte
	ldigest   string
}

// pushRandomImage pushes a one-layer random image as <srv>/team/app:v1.
func pushRandomImage(t *testing.T, srv *httptest.Server) pushed {
	t.Helper()
	tag, err := name.NewTag(strings.TrimPrefix(srv.URL, "http://")+"/team/app:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(4096, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img, remote.WithContext(testCtx(t))); err != nil {
		t.Fatalf("push: %v", err)
	}
	var p pushed
	p.manifest, _ = img.RawManifest()
	md, _ := img.Digest()
	mt, _ := img.MediaType()
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	rc, _ := layers[0].Compressed()
	defer rc.Close()
	p.layer, err = io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	p.mdigest, p.mediaType, p.ldigest = md.String(), string(mt), ld.String()
	return p
}

// TestDistributionRegistry pushes a random image to a real registry and
// pulls it back through the client.
func TestDistributionRegistry(t *testing.T) {
	srv := newDistribution(t)
	img := pushRandomImage(t, srv)
	rawManifest, mdgst, layerBytes := img.manifest, img.mdigest, img.layer
	ldgst, lsize := img.ldigest, int64(len(img.layer))
	c := newTestClient(t, srv.URL)
	accept := http.Header{"Accept": {img.mediaType}}
	missing := "sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		name       string
		r          Request
		wantStatus int
		wantLen    int64  // Content-Length
		wantBody   []byte // nil: not checked (HEAD must be empty)
	}{
		{"GET manifest by tag", Request{Kind: ociref.KindManifests, Ref: "v1", Method: http.MethodGet, Header: accept}, 200, int64(len(rawManifest)), rawManifest},
		{"HEAD manifest by tag", Request{Kind: ociref.KindManifests, Ref: "v1", Method: http.MethodHead, Header: accept}, 200, int64(len(rawManifest)), nil},
		{"GET manifest by digest", Request{Kind: ociref.KindManifests, Ref: mdgst, Method: http.MethodGet, Header: accept}, 200, int64(len(rawManifest)), rawManifest},
		{"HEAD manifest by digest", Request{Kind: ociref.KindManifests, Ref: mdgst, Method: http.MethodHead, Header: accept}, 200, int64(len(rawManifest)), nil},
		{"GET blob", Request{Kind: ociref.KindBlobs, Ref: ldgst, Method: http.MethodGet}, 200, lsize, layerBytes},
		{"HEAD blob", Request{Kind: ociref.KindBlobs, Ref: ldgst, Method: http.MethodHead}, 200, lsize, nil},
		{"GET blob range", Request{Kind: ociref.KindBlobs, Ref: ldgst, Method: http.MethodGet, Header: http.Header{"Range": {"bytes=10-19"}}}, 206, 10, layerBytes[10:20]},
		{"GET missing blob", Request{Kind: ociref.KindBlobs, Ref: missing, Method: http.MethodGet}, 404, -1, nil},
		{"HEAD missing manifest", Request{Kind: ociref.KindManifests, Ref: "nope", Method: http.MethodHead}, 404, -1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.r.Registry, tt.r.Repo = testRegistry, "team/app"
			resp, err := c.Do(testCtx(t), tt.r)
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			body, err := io.ReadAll(resp.Body)
			discard(resp)
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %q)", resp.StatusCode, tt.wantStatus, body)
			}
			if tt.wantLen >= 0 && resp.ContentLength != tt.wantLen {
				t.Errorf("Content-Length = %d, want %d", resp.ContentLength, tt.wantLen)
			}
			if tt.r.Method == http.MethodHead && len(body) != 0 {
				t.Errorf("HEAD returned %d body bytes", len(body))
			}
			if tt.wantBody != nil && !bytes.Equal(body, tt.wantBody) {
				t.Errorf("body differs (%d bytes, want %d)", len(body), len(tt.wantBody))
			}
			if tt.wantStatus == 200 {
				want := tt.r.Ref
				if tt.r.Kind == ociref.KindManifests {
					want = mdgst
				}
				if got := resp.Header.Get("Docker-Content-Digest"); got != want {
					t.Errorf("Docker-Content-Digest = %s, want %s", got, want)
				}
			}
		})
	}

	t.Run("tags list", func(t *testing.T) {
		r := Request{Registry: testRegistry, Repo: "team/app", Kind: ociref.KindTags, Method: http.MethodGet, RawQuery: "n=" + strconv.Itoa(10)}
		resp, err := c.Do(testCtx(t), r)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		discard(resp)
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"v1"`) {
			t.Errorf("tags/list = %d %s", resp.StatusCode, body)
		}
	})
}
