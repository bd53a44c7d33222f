// Command pause is the pod sandbox of the test cluster of scripts/k8s/up.sh
// (tagged registry.k8s.io/pause:3.10, since nothing can be pulled here). As
// PID 1 of a pod's namespaces it reaps the children it inherits and exits 0
// on SIGTERM or SIGINT, like the upstream pause container.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		// Reap every exited child; one SIGCHLD may stand for several.
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
