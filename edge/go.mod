module github.com/livecluster/livecluster/edge

go 1.26.0

replace (
	github.com/livecluster/livecluster/media => ../media
	github.com/livecluster/livecluster/node => ../node
	github.com/livecluster/livecluster/proto => ../proto
)
