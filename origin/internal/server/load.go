package server

import (
	"time"

	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"

	"github.com/livecluster/livecluster/origin/internal/api"
)

// load is the heartbeat's load report.
func (s *Server) load() *ocmv1.Load {
	pubs, players := s.clients.Counts()
	in, out := s.clients.Bytes()
	out += s.hlsBytes.Load()
	streams := s.pubs.Len()
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	now := time.Now()
	dt := now.Sub(s.lastLoad).Seconds()
	var inBps, outBps uint64
	if dt > 0 {
		inBps = uint64(max(0, float64(in-s.lastIn)*8/dt))
		outBps = uint64(max(0, float64(out-s.lastOut)*8/dt))
	}
	s.lastLoad, s.lastIn, s.lastOut = now, in, out
	s.lastCPU = s.cpu.Cores()
	n := 0
	for _, v := range players {
		n += v
	}
	return &ocmv1.Load{
		Streams: uint32(streams), Publishers: uint32(pubs), Players: uint32(n),
		IngressBps: inBps, EgressBps: outBps, CpuCores: s.lastCPU,
		BytesIn: uint64(in), BytesOut: uint64(out),
	}
}

func (s *Server) status() api.Status {
	pubs, players := s.clients.Counts()
	n := s.pubs.Len()
	s.loadMu.Lock()
	c := s.lastCPU
	s.loadMu.Unlock()
	return api.Status{
		NodeID: s.rt.Config().NodeID, Registered: s.oc.Registered(), Draining: s.rt.Lifecycle.Draining(),
		Fenced: s.owner.Fenced(), Streams: n, Publishers: pubs, Players: players["rtmp"] + players["flv"], CPUCores: c,
	}
}
