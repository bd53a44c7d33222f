module github.com/livecluster/livecluster/edge

go 1.26.0

replace (
	github.com/livecluster/livecluster/media => ../media
	github.com/livecluster/livecluster/node => ../node
	github.com/livecluster/livecluster/proto => ../proto
)

require (
	github.com/livecluster/livecluster/media v0.0.0-00010101000000-000000000000
	github.com/livecluster/livecluster/node v0.0.0-00010101000000-000000000000
	github.com/livecluster/livecluster/proto v0.0.0-00010101000000-000000000000
	github.com/nareix/joy4 v0.0.0-20200507095837-05a4ffbb5369
	github.com/prometheus/client_golang v1.25.0
	google.golang.org/grpc v1.85.0
)

require github.com/kylelemons/godebug v1.1.0 // indirect

require (
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/fsnotify/fsnotify v1.10.1 // indirect
	github.com/livecluster/livecluster/streamkey v0.0.0-00010101000000-000000000000
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/prometheus/client_model v0.6.3
	github.com/prometheus/common v0.72.0 // indirect
	github.com/prometheus/procfs v0.22.0 // indirect
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.48.0
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)

replace github.com/livecluster/livecluster/streamkey => ../streamkey
