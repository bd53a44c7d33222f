module github.com/livecluster/livecluster/media

go 1.26.0

require (
	github.com/livecluster/livecluster/streamkey v0.0.0-00010101000000-000000000000
	github.com/nareix/joy4 v0.0.0-20200507095837-05a4ffbb5369
)

require golang.org/x/sys v0.48.0

replace github.com/livecluster/livecluster/streamkey => ../streamkey
