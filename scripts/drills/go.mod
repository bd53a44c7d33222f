module github.com/livecluster/livecluster/scripts/drills

go 1.26.0
