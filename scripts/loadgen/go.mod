module github.com/livecluster/livecluster/scripts/loadgen

go 1.26.0

replace (
	github.com/livecluster/livecluster/media => ../../media
	github.com/livecluster/livecluster/node => ../../node
	github.com/livecluster/livecluster/proto => ../../proto
)

require (
	github.com/livecluster/livecluster/media v0.0.0-00010101000000-000000000000
	github.com/livecluster/livecluster/node v0.0.0-00010101000000-000000000000
	github.com/nareix/joy4 v0.0.0-20200507095837-05a4ffbb5369
)

require github.com/livecluster/livecluster/streamkey v0.0.0-00010101000000-000000000000 // indirect

replace github.com/livecluster/livecluster/streamkey => ../../streamkey
