package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/livecluster/livecluster/node/authz"
	"github.com/livecluster/livecluster/node/config"
	"github.com/livecluster/livecluster/streamkey"
)

type authConfig struct {
	config.Common `yaml:",inline"`
	Auth          config.Auth `yaml:"auth"`
}

func authBinary(out, errw *bytes.Buffer) Binary[authConfig] {
	return Binary[authConfig]{
		Name: "node",
		Config: config.Loader[authConfig]{Defaults: func() authConfig {
			return authConfig{Common: config.DefaultCommon(), Auth: config.DefaultAuth()}
		}},
		Auth:   func(c *authConfig) *config.Auth { return &c.Auth },
		Stdout: out, Stderr: errw,
	}
}

// The token subcommand mints with the configured keys what the authorizer
// then accepts, for that action and stream only.
func TestTokenSubcommand(t *testing.T) {
	t.Setenv("LIVECLUSTER_AUTH_TOKEN_KEYS", "new:0123456789abcdef-new,old:0123456789abcdef-old")
	var out, errw bytes.Buffer
	code := Main(authBinary(&out, &errw), []string{"token", "--action", "publish", "--app", "live", "--stream", "cam1", "--ttl", "2m"})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errw.String())
	}
	tok := strings.TrimSpace(out.String())
	if !strings.HasPrefix(tok, "v1.new.") {
		t.Fatalf("token %q: want signed with the first key", tok)
	}
	keys, _ := config.ParseKeys([]string{"new:0123456789abcdef-new"})
	ring := authz.NewKeyring(keys)
	key := streamkey.Key{Vhost: "default", App: "live", Name: "cam1"}
	if err := ring.Verify(tok, "publish", key, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := ring.Verify(tok, "publish", key, time.Now().Add(3*time.Minute)); err == nil {
		t.Fatal("--ttl 2m token valid after 3 minutes")
	}
	if err := ring.Verify(tok, "play", key, time.Now()); err == nil {
		t.Fatal("publish token plays")
	}
	out.Reset()
	if code := Main(authBinary(&out, &errw), []string{"token", "--action", "play", "--app", "live", "--stream", "cam1", "--kid", "old"}); code != 0 ||
		!strings.HasPrefix(out.String(), "v1.old.") {
		t.Fatalf("--kid old: exit %d, %q", code, out.String())
	}
	for _, bad := range [][]string{
		{"token", "--action", "delete", "--app", "live", "--stream", "s"},
		{"token", "--action", "play", "--app", "li/ve", "--stream", "s"},
		{"token", "--action", "play", "--app", "live", "--stream", "s", "--kid", "nope"},
		{"token", "--action", "play", "--app", "live", "--stream", "s", "--ttl", "-1s"},
	} {
		errw.Reset()
		if code := Main(authBinary(&out, &errw), bad); code != ExitUsage || errw.Len() == 0 {
			t.Errorf("%q: exit %d, stderr %q", bad, code, errw.String())
		}
	}
	t.Setenv("LIVECLUSTER_AUTH_TOKEN_KEYS", "")
	errw.Reset()
	if code := Main(authBinary(&out, &errw), []string{"token", "--action", "play", "--app", "live", "--stream", "s"}); code != ExitUsage ||
		!strings.Contains(errw.String(), "no auth.token.keys") {
		t.Errorf("no keys: exit %d, %q", code, errw.String())
	}
	// A binary without Auth has no token subcommand.
	b := authBinary(&out, &errw)
	b.Auth = nil
	if code := Main(b, []string{"token"}); code != ExitUsage {
		t.Errorf("token without Binary.Auth: exit %d", code)
	}
}
