// Command edge serves players and forwards publishes for a livecluster: it
// pulls each stream once from its owning origin (found through the OCM) and
// fans it out over RTMP, HTTP-FLV and HLS, and forwards publishes to the
// origin the OCM assigns. See docs/edge.md.
package main

import (
	"os"

	"github.com/livecluster/livecluster/node/cli"

	"github.com/livecluster/livecluster/edge/internal/app"
)

var version = "dev"

func main() {
	os.Exit(cli.Main(app.Binary(version), os.Args[1:]))
}
