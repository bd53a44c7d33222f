module lck8s/drillplay

go 1.24
