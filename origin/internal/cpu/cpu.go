// Package cpu measures the process's CPU use in cores from its CPU time
// (user + system, getrusage), for the heartbeat's load report.
package cpu

import (
	"sync"
	"syscall"
	"time"
)

// Sampler reports the average CPU use between two calls of Cores.
type Sampler struct {
	mu       sync.Mutex
	lastCPU  time.Duration
	lastWall time.Time
}

// New starts measuring now.
func New() *Sampler {
	s := &Sampler{lastWall: time.Now()}
	s.lastCPU, _ = processCPU()
	return s
}

func processCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// Cores returns the CPU cores used on average since the previous call
// (1.0 = one core busy the whole time); 0 when it cannot tell.
func (s *Sampler) Cores() float64 {
	now := time.Now()
	cpu, err := processCPU()
	if err != nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	wall := now.Sub(s.lastWall)
	used := cpu - s.lastCPU
	s.lastCPU, s.lastWall = cpu, now
	if wall <= 0 || used < 0 {
		return 0
	}
	return used.Seconds() / wall.Seconds()
}

// Total returns the process's CPU time so far.
func Total() time.Duration {
	d, _ := processCPU()
	return d
}
