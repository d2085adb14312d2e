package credentials

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestAuthRedacted(t *testing.T) {
	tests := []struct {
		a        Auth
		kind     string
		printed  string
		username bool
	}{
		{Auth{Username: "bot", Password: "secret-pw"}, "basic", "basic(bot)", true},
		{Auth{Username: "bot", IdentityToken: "secret-id"}, "identity-token", "identity-token(bot)", true},
		{Auth{RegistryToken: "secret-rt"}, "registry-token", "registry-token", false},
		{Auth{Password: "secret-pw"}, "basic", "basic", false},
		{Auth{}, "none", "none", false},
	}
	for _, tt := range tests {
		t.Run(tt.printed, func(t *testing.T) {
			if got := tt.a.Kind(); got != tt.kind {
				t.Errorf("Kind() = %q, want %q", got, tt.kind)
			}
			if got := fmt.Sprint(tt.a); got != tt.printed {
				t.Errorf("Sprint = %q, want %q", got, tt.printed)
			}
			outer := struct {
				Name string
				A    Auth
				P    *Auth
			}{"x", tt.a, &tt.a}
			var outs []string
			for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%d", "%x", "%X", "%T", "%10.3v"} {
				outs = append(outs, fmt.Sprintf(verb, tt.a), fmt.Sprintf(verb, outer))
			}
			var text, js bytes.Buffer
			slog.New(slog.NewTextHandler(&text, nil)).Info("m", "auth", tt.a, "ptr", &tt.a)
			slog.New(slog.NewJSONHandler(&js, nil)).Info("m", slog.Any("auth", tt.a))
			outs = append(outs, text.String(), js.String())
			for _, out := range outs {
				if strings.Contains(out, "secret") {
					t.Errorf("output shows a secret: %s", out)
				}
			}
			if !strings.Contains(text.String(), "auth.kind="+tt.kind) {
				t.Errorf("slog text output lacks the kind: %s", text.String())
			}
			if got := strings.Contains(js.String(), `"username":"bot"`); got != tt.username {
				t.Errorf("slog JSON shows username: %v, want %v: %s", got, tt.username, js.String())
			}
		})
	}
}

func TestAuthIsZero(t *testing.T) {
	if !(Auth{}).IsZero() {
		t.Error("Auth{}.IsZero() = false")
	}
	if (Auth{IdentityToken: "x"}).IsZero() {
		t.Error("an Auth with an identity token is zero")
	}
}
