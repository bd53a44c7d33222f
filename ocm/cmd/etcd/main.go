// Command etcd is the etcd server of the livecluster/etcd image: etcd's own
// entry point (go.etcd.io/etcd/server/v3/etcdmain, the version the ocm module
// requires, so the bundled cluster and the OCM's embedded member are the
// same etcd), plus two subcommands that an image without a shell needs:
//
//	etcd healthcheck [--url URL] [--timeout D]
//	    GET URL (default http://127.0.0.1:2379/health) and exit 0 when it
//	    answers 200 with {"health":"true"}; 1 otherwise (Docker HEALTHCHECK).
//	etcd version
//	    print the etcd version and the livecluster version of the image.
//
// Everything else (flags, ETCD_* variables, `etcd gateway`, `etcd
// grpc-proxy`) is etcd's, unchanged. As PID 1 etcd exits 0 on SIGTERM after
// closing the member (etcd's osutil.HandleInterrupts does so when it is the
// init process).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"time"

	etcdversion "go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/server/v3/etcdmain"
)

// version of livecluster, stamped by scripts/images.sh with
// -ldflags "-X main.version=..." like the other binaries.
var version = "dev"

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "healthcheck":
			os.Exit(healthcheck(os.Args[2:], os.Stdout, os.Stderr))
		case "version":
			fmt.Printf("etcd %s livecluster %s %s/%s %s\n", etcdversion.Version, version,
				runtime.GOOS, runtime.GOARCH, runtime.Version())
			return
		}
	}
	etcdmain.Main(os.Args)
}

// DefaultHealthURL is the health endpoint of a member listening on its
// default client URL.
const DefaultHealthURL = "http://127.0.0.1:2379/health"

// healthcheck runs the healthcheck subcommand and returns its exit code: 0
// when the member reports itself healthy, 1 when it does not or cannot be
// reached (the reason on stderr), 2 for a bad command line.
func healthcheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("etcd healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", DefaultHealthURL, "health endpoint of the local member")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "etcd healthcheck: unexpected arguments %q\n", fs.Args())
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := checkHealth(ctx, *url); err != nil {
		fmt.Fprintf(stderr, "etcd healthcheck: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "healthy")
	return 0
}

// checkHealth GETs etcd's /health endpoint. It fails when the request
// fails, the status is not 200 or the body does not say "health": "true"
// (etcd answers 503 with a reason when the member has no leader or its
// alarms are raised).
func checkHealth(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("health URL %q: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("GET %s: read body: %w", url, err)
	}
	var h struct {
		Health string `json:"health"`
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal(body, &h); err != nil {
		return fmt.Errorf("GET %s: %s: not an etcd health answer: %q", url, resp.Status, body)
	}
	if resp.StatusCode != http.StatusOK || h.Health != "true" {
		return fmt.Errorf("GET %s: %s: health %q, reason %q", url, resp.Status, h.Health, h.Reason)
	}
	return nil
}
