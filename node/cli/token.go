package cli

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/livecluster/livecluster/node/authz"
	"github.com/livecluster/livecluster/node/config"
	"github.com/livecluster/livecluster/streamkey"
)

// token mints a signed URL token (docs/security.md) with a key of the
// configuration's auth.token.keys (file, or LIVECLUSTER_AUTH_TOKEN_KEYS),
// and prints it on stdout. Bad arguments, an unknown kid or no keys exit
// ExitUsage with the reason on stderr.
func token[T any](b Binary[T], args []string) int {
	fs := flag.NewFlagSet(b.Name+" token", flag.ContinueOnError)
	fs.SetOutput(b.Stderr)
	configFile := fs.String("config", os.Getenv("LIVECLUSTER_CONFIG"), "YAML config file whose auth.token.keys sign (env LIVECLUSTER_CONFIG)")
	action := fs.String("action", "", "publish or play (required)")
	vhost := fs.String("vhost", streamkey.DefaultVhost, "vhost")
	app := fs.String("app", "", "app (required)")
	name := fs.String("stream", "", "stream name (required)")
	ttl := fs.Duration("ttl", time.Hour, "validity from now")
	kid := fs.String("kid", "", "key id to sign with (default: the first of auth.token.keys)")
	fs.Usage = func() {
		fmt.Fprintf(b.Stderr, "usage: %s token --action publish|play --app APP --stream NAME [--vhost V] [--ttl 1h] [--kid ID] [--config FILE]\n", b.Name)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(b.Stderr, "%s token: "+format+"\n", append([]any{b.Name}, a...)...)
		return ExitUsage
	}
	if fs.NArg() > 0 {
		return fail("unexpected arguments %q", fs.Args())
	}
	if *action != string(authz.Publish) && *action != string(authz.Play) {
		return fail("--action must be publish or play, got %q", *action)
	}
	key, err := streamkey.New(*vhost, *app, *name)
	if err != nil {
		return fail("%v", err)
	}
	if *ttl <= 0 {
		return fail("--ttl must be > 0, got %s", *ttl)
	}
	cfg, err := b.Config.Load(config.Source{File: *configFile, Env: os.Environ()})
	if err != nil {
		return fail("%v", err)
	}
	keys, err := config.ParseKeys(b.Auth(cfg).Token.Keys)
	if err != nil {
		return fail("auth.token.keys: %v", err)
	}
	if len(keys) == 0 {
		return fail("no auth.token.keys configured (config file or %s)", config.EnvName("auth.token.keys"))
	}
	tok, err := authz.NewKeyring(keys).Mint(*kid, *action, key, time.Now().Add(*ttl))
	if err != nil {
		return fail("%v", err)
	}
	fmt.Fprintln(b.Stdout, tok)
	return 0
}
