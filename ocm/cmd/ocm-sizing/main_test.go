package main

import (
	"math"
	"testing"
	"time"
)

// The model's arithmetic on a scenario worked out by hand.
func TestSize(t *testing.T) {
	c := Costs{
		ClaimCPU: 100 * time.Microsecond, HeartbeatCPU: 100 * time.Microsecond,
		DeliveryCPU: 10 * time.Microsecond, LookupCPU: 50 * time.Microsecond, ApplyCPU: 10 * time.Microsecond,
		BytesPerStream: 1024, ReplicaCores: 1, EtcdWritesPerSec: 1000, EtcdMaxKeys: 1e5, StreamsPerOriginCore: 100,
		RecordShare: 1,
	}
	s := Scenario{Streams: 10_000, Edges: 100, Origins: 50, KeysPer: 200, Churn: 500, Lookups: 1000, Heartbeat: time.Second}
	r := Size(c, s)
	near := func(what string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-9*math.Max(1, want) {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	near("heartbeats", r.Heartbeats, 150)
	near("etcd writes", r.EtcdWrites, 650)
	near("etcd keys", r.EtcdKeys, 10_150)
	near("watchers per key", r.WatchersPerKey, 2)
	near("deliveries", r.Deliveries, 1000)
	// 500×100µs + 150×100µs + 1000×10µs + 1000×50µs
	near("OCM cores", r.OCMCores, 0.125)
	near("MiB per replica", r.ReplicaMemMiB, 10_000*1024.0/(1<<20))
	if r.Replicas != 2 || r.EtcdShards != 1 || r.OriginsNeeded != 100 {
		t.Errorf("replicas %d, shards %d, origins %d; want 2, 1, 100", r.Replicas, r.EtcdShards, r.OriginsNeeded)
	}

	// Heartbeats that only renew the lease are no raft writes.
	c.RecordShare = 0.2
	if r := Size(c, s); r.RecordWrites != 30 || r.EtcdWrites != 530 {
		t.Errorf("record writes %v, etcd writes %v at a 0.2 record share; want 30, 530", r.RecordWrites, r.EtcdWrites)
	}
	c.RecordShare = 1
	// Ten times the churn: 5,150 writes/s need six etcd clusters of 1,000.
	s.Churn = 5000
	if r := Size(c, s); r.EtcdShards != 6 {
		t.Errorf("shards at 5150 writes/s: %d, want 6", r.EtcdShards)
	}
	// More keys than a cluster holds: shards by keys.
	s.Churn, s.Streams = 500, 1_000_000
	if r := Size(c, s); r.EtcdShards != 11 {
		t.Errorf("shards for 1,000,150 keys: %d, want 11", r.EtcdShards)
	}
	// Every replica applies every write: when that alone fills a replica,
	// no replica count is enough.
	c.ApplyCPU = time.Millisecond
	s.Churn, s.Streams = 5000, 10_000
	if r := Size(c, s); r.Replicas != -1 {
		t.Errorf("replicas when applying 5150 writes/s takes 5 cores: %d, want -1", r.Replicas)
	}
	// Watchers per key never exceed the edges.
	s.KeysPer = 1_000_000
	if r := Size(c, s); r.WatchersPerKey != 100 {
		t.Errorf("watchers per key %v, want 100 (all edges)", r.WatchersPerKey)
	}
}
