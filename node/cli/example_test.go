package cli_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/livecluster/livecluster/node/cli"
	"github.com/livecluster/livecluster/node/config"
	"github.com/livecluster/livecluster/node/ocmclient"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// EdgeConfig is a binary's configuration: the common keys plus its own.
type EdgeConfig struct {
	config.Common `yaml:",inline"`
	OCM           string `yaml:"ocm"`
	RTMP          struct {
		Listen string `yaml:"listen"`
	} `yaml:"rtmp"`
	AdvertiseHost string `yaml:"advertiseHost"`
}

// A whole edge main (minus the media engine).
func Example() {
	b := cli.Binary[EdgeConfig]{
		Name:    "edge",
		Version: "v1.2.3",
		Config: config.Loader[EdgeConfig]{
			Defaults: func() EdgeConfig {
				c := EdgeConfig{Common: config.DefaultCommon(), OCM: "ocm:7000"}
				c.RTMP.Listen = ":1935"
				c.AdvertiseHost = c.NodeID
				return c
			},
			Validate: func(c *EdgeConfig) error {
				if err := config.ValidListen(c.RTMP.Listen); err != nil {
					return fmt.Errorf("rtmp.listen: %w", err)
				}
				return nil
			},
		},
		Flags: []cli.Flag{
			{Name: "ocm", Key: "ocm", Usage: "OCM address"},
			{Name: "rtmp-listen", Key: "rtmp.listen", Usage: "RTMP address"},
			{Name: "advertise-host", Key: "advertiseHost", Usage: "host other nodes dial"},
		},
		Run: func(ctx context.Context, rt *cli.Runtime[EdgeConfig]) error {
			cfg := rt.Config()
			ln, err := net.Listen("tcp", cfg.RTMP.Listen)
			if err != nil {
				return fmt.Errorf("rtmp listen: %w", err)
			}
			rt.Lifecycle.AddListener("rtmp", ln) // closed at drain step 3
			// go serveRTMP(ctx, ln) ...
			oc, err := ocmclient.New(ocmclient.Options{
				Address: cfg.OCM, Logger: rt.Logger,
				Node: &ocmv1.Node{Id: cfg.NodeID, Role: ocmv1.NodeRole_NODE_ROLE_EDGE,
					Addresses: &ocmv1.NodeAddresses{Rtmp: net.JoinHostPort(cfg.AdvertiseHost, "1935")}},
			})
			if err != nil {
				return err
			}
			oc.Bind(rt.Lifecycle) // readiness, DRAINING, Deregister
			oc.Start(ctx)         // never blocks
			rt.Lifecycle.OnDrain("players", func(ctx context.Context) error {
				// Wait for players to leave; ctx ends at shutdown.drainTimeout.
				return nil
			})
			rt.Admin.Mux.HandleFunc("GET /api/v1/streams", func(w http.ResponseWriter, r *http.Request) {})
			return nil
		},
	}
	// A real main is os.Exit(cli.Main(b, os.Args[1:])). Here: a bad flag
	// value is refused before anything starts, naming its config key, with
	// the usage exit code; "version" prints the name and version.
	b.Stderr, b.Stdout = os.Stdout, io.Discard
	fmt.Println("exit code", cli.Main(b, []string{"--rtmp-listen", "nonsense", "--node-id", "edge-1"}))
	var out strings.Builder
	b.Stdout = &out
	code := cli.Main(b, []string{"version"})
	fmt.Println(strings.Fields(out.String())[:2], "exit code", code)
	// Output:
	// edge: invalid configuration: rtmp.listen: must be host:port, got "nonsense"
	// exit code 2
	// [edge v1.2.3] exit code 0
}
