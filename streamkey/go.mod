module github.com/livecluster/livecluster/streamkey

go 1.26.0
