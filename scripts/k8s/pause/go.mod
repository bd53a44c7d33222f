module lck8s/pause

go 1.24
