// Command origin is the livecluster origin: it accepts RTMP publishes,
// claims each stream from the OCM, serves it over RTMP and HTTP-FLV, writes
// HLS and serves the HTTP API. See docs/origin.md.
package main

import (
	"os"

	"github.com/livecluster/livecluster/node/cli"
	nodeconfig "github.com/livecluster/livecluster/node/config"

	"github.com/livecluster/livecluster/origin/internal/config"
	"github.com/livecluster/livecluster/origin/internal/server"
)

var version = "dev"

func main() {
	os.Exit(cli.Main(cli.Binary[config.Config]{
		Name:    "origin",
		Version: version,
		Config:  config.Loader(),
		Flags: []cli.Flag{
			{Name: "ocm", Key: "ocm.address", Usage: "OCM address, e.g. ocm:7000"},
			{Name: "rtmp-listen", Key: "rtmp.listen", Usage: "RTMP address"},
			{Name: "http-listen", Key: "http.listen", Usage: "HTTP address: HTTP-FLV, HLS, HTTP API"},
			{Name: "advertise-host", Key: "advertise.host", Usage: "host other nodes dial (default: the host name)"},
			{Name: "hls-dir", Key: "hls.dir", Usage: "HLS output directory"},
		},
		Run:   server.Run,
		Apply: server.Apply,
		Auth:  func(c *config.Config) *nodeconfig.Auth { return &c.Auth },
	}, os.Args[1:]))
}
