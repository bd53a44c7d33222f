// Command ocm-sizing is a small model of the control plane's load: from a
// cluster's size (streams, edges, origins, keys each edge watches, claim and
// release churn, lookups) and the per-operation costs measured by
// scripts/bench-ocm.sh and the data-plane benchmarks, it computes the etcd
// write and lease-renewal load, the watch fan-out, the OCM replicas and etcd
// clusters (shards) needed, and the origins an ingest load needs. It prints
// one Markdown table row per scenario (docs/scaling.md holds its output and
// says where each default comes from).
//
//	go run ./cmd/ocm-sizing                       the built-in scenarios
//	go run ./cmd/ocm-sizing -streams 250000 -edges 1000 -origins 800 -churn 2500
//
// The model is arithmetic on measured averages, not a simulation of queues:
// it says which resource runs out first, not how latency grows near it.
package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"time"
)

// Costs are the measured per-operation costs and per-resource limits.
type Costs struct {
	// CPU of one OCM replica (with etcd outside it) per operation.
	ClaimCPU     time.Duration // one claim or release: the gRPC call and its etcd transaction
	HeartbeatCPU time.Duration // one heartbeat (lease renewal)
	DeliveryCPU  time.Duration // one watch event sent to one watcher
	LookupCPU    time.Duration // one LookupStream
	ApplyCPU     time.Duration // one etcd change applied to a replica's cache (every replica pays it)
	// Memory of one OCM replica per stream (its cache and gRPC state).
	BytesPerStream float64
	// Per replica: usable cores (at the target utilization).
	ReplicaCores float64
	// One etcd cluster: writes per second it sustains, and keys it holds
	// within its storage quota.
	EtcdWritesPerSec float64
	EtcdMaxKeys      float64
	// Data plane: streams one origin core ingests with HLS on (none late).
	StreamsPerOriginCore float64
	// RecordShare is the share of heartbeats that still write the node
	// record (the load moved materially, or the record is 30 s old); the
	// others only renew the lease, which is not a raft write.
	RecordShare float64
}

// Scenario is one cluster size.
type Scenario struct {
	Name      string
	Streams   int
	Edges     int
	Origins   int
	KeysPer   int     // keys each edge watches
	Churn     float64 // claims + releases per second
	Lookups   float64 // LookupStream calls per second
	Heartbeat time.Duration
}

// Result is what a scenario needs.
type Result struct {
	EtcdWrites     float64 // raft writes per second: claims, releases and node-record writes
	Heartbeats     float64 // per second, one per node per interval: a lease renewal
	RecordWrites   float64 // per second: the heartbeats that also rewrite the node record
	EtcdKeys       float64
	WatchersPerKey float64 // mean edges watching a churned key
	Deliveries     float64 // watch events sent to edges per second
	OCMCores       float64 // all replicas together, excluding the per-replica apply cost
	Replicas       int
	ReplicaMemMiB  float64
	EtcdShards     int
	OriginsNeeded  int // origin cores for the streams' ingest
}

// Size computes what s needs under c. Watched keys are spread uniformly
// over the streams, so a churned key has Edges×KeysPer/Streams watchers on
// average (capped at Edges).
func Size(c Costs, s Scenario) Result {
	var r Result
	// A heartbeat renews the node's lease (the etcd leader's own work, not
	// a raft write); a share of them also rewrite the node record (the load
	// report) in a transaction, a raft write like a claim.
	r.Heartbeats = float64(s.Edges+s.Origins) / s.Heartbeat.Seconds()
	r.RecordWrites = r.Heartbeats * c.RecordShare
	r.EtcdWrites = s.Churn + r.RecordWrites
	// A stream key per stream; a node record per node (a draining key only
	// while a node drains).
	r.EtcdKeys = float64(s.Streams + s.Edges + s.Origins)
	if s.Streams > 0 {
		r.WatchersPerKey = math.Min(float64(s.Edges), float64(s.Edges)*float64(s.KeysPer)/float64(s.Streams))
	}
	r.Deliveries = s.Churn * r.WatchersPerKey
	shared := s.Churn*c.ClaimCPU.Seconds() + r.Heartbeats*c.HeartbeatCPU.Seconds() +
		r.Deliveries*c.DeliveryCPU.Seconds() + s.Lookups*c.LookupCPU.Seconds()
	r.OCMCores = shared
	// Every replica applies every change to its cache; the rest of the
	// work divides among replicas. Solve n*ReplicaCores >= shared + n*apply.
	apply := r.EtcdWrites * c.ApplyCPU.Seconds()
	if c.ReplicaCores <= apply {
		r.Replicas = -1 // no replica count is enough: shard first
	} else {
		r.Replicas = max(2, int(math.Ceil(shared/(c.ReplicaCores-apply))))
	}
	r.ReplicaMemMiB = float64(s.Streams) * c.BytesPerStream / (1 << 20)
	r.EtcdShards = max(1, int(math.Ceil(r.EtcdWrites/c.EtcdWritesPerSec)), int(math.Ceil(r.EtcdKeys/c.EtcdMaxKeys)))
	if c.StreamsPerOriginCore > 0 {
		r.OriginsNeeded = int(math.Ceil(float64(s.Streams) / c.StreamsPerOriginCore))
	}
	return r
}

func header(w io.Writer) {
	fmt.Fprintln(w, "| scenario | streams | edges | origins | churn/s | lookups/s | heartbeats/s | of which record writes/s | etcd writes/s | etcd keys | watchers per churned key | watch deliveries/s | OCM cores (shared) | OCM replicas | MiB per replica (cache) | etcd clusters | origin cores for ingest |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
}

func row(w io.Writer, s Scenario, r Result) {
	reps := fmt.Sprint(r.Replicas)
	if r.Replicas < 0 {
		reps = "shard first"
	}
	fmt.Fprintf(w, "| %s | %d | %d | %d | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.1f | %.0f | %.2f | %s | %.0f | %d | %d |\n",
		s.Name, s.Streams, s.Edges, s.Origins, s.Churn, s.Lookups, r.Heartbeats, r.RecordWrites, r.EtcdWrites, r.EtcdKeys,
		r.WatchersPerKey, r.Deliveries, r.OCMCores, reps, r.ReplicaMemMiB, r.EtcdShards, r.OriginsNeeded)
}

func main() {
	var c Costs
	flag.DurationVar(&c.ClaimCPU, "claim-cpu", 450*time.Microsecond, "OCM+etcd CPU per claim or release (ocm-bench: OCM CPU per claim)")
	flag.DurationVar(&c.HeartbeatCPU, "heartbeat-cpu", 200*time.Microsecond, "OCM CPU per heartbeat (ocm-bench --idle-duration: ≤ 167 µs when it only renews the lease)")
	flag.DurationVar(&c.DeliveryCPU, "delivery-cpu", 20*time.Microsecond, "OCM CPU per watch event delivered (ocm-bench --watchers)")
	flag.DurationVar(&c.LookupCPU, "lookup-cpu", 40*time.Microsecond, "OCM CPU per LookupStream (docs/benchmarks.md)")
	flag.DurationVar(&c.ApplyCPU, "apply-cpu", 20*time.Microsecond, "CPU per etcd change applied to one replica's cache")
	flag.Float64Var(&c.BytesPerStream, "bytes-per-stream", 2300, "OCM RSS per stream at the least memory that works (bench-ocm --watchers: 231 MB at 100k streams and 500 watchers with a 192 MiB limit; the 512 MiB default lets it reach ~520 MB for less GC)")
	flag.Float64Var(&c.ReplicaCores, "replica-cores", 1, "usable cores per OCM replica (e.g. 2 cores at 50%)")
	flag.Float64Var(&c.EtcdWritesPerSec, "etcd-writes", 5000, "writes/s (claims, releases, heartbeats) one etcd cluster takes with room")
	flag.Float64Var(&c.EtcdMaxKeys, "etcd-keys", 4e6, "keys one etcd cluster holds within its quota")
	flag.Float64Var(&c.StreamsPerOriginCore, "streams-per-origin-core", 400, "1 Mbps streams one origin core ingests with HLS, none late (bench-ingest: 400, the largest point run, at 0.58 of the core)")
	flag.Float64Var(&c.RecordShare, "record-share", 0.2, "share of heartbeats that rewrite the node record (load moved, or the record is 30 s old: 1.67/30 = 0.06 from that alone); assumed")
	var one Scenario
	flag.IntVar(&one.Streams, "streams", 0, "one scenario: streams (0: the built-in scenarios)")
	flag.IntVar(&one.Edges, "edges", 500, "edges")
	flag.IntVar(&one.Origins, "origins", 200, "origins")
	flag.IntVar(&one.KeysPer, "keys-per-edge", 200, "keys each edge watches")
	flag.Float64Var(&one.Churn, "churn", 1000, "claims + releases per second")
	flag.Float64Var(&one.Lookups, "lookups", 1000, "lookups per second")
	flag.DurationVar(&one.Heartbeat, "heartbeat", 5*time.Second/3, "heartbeat interval (lease TTL / 3)")
	flag.Parse()
	if one.Heartbeat <= 0 || c.ReplicaCores <= 0 || c.EtcdWritesPerSec <= 0 || c.EtcdMaxKeys <= 0 || c.RecordShare < 0 || c.RecordShare > 1 {
		fmt.Fprintln(os.Stderr, "ocm-sizing: -heartbeat, -replica-cores, -etcd-writes and -etcd-keys must be positive, -record-share within [0, 1]")
		os.Exit(2)
	}
	var scenarios []Scenario
	if one.Streams == 0 {
		scenarios = builtIn(one.Heartbeat)
	} else {
		one.Name = "custom"
		scenarios = []Scenario{one}
	}
	header(os.Stdout)
	for _, s := range scenarios {
		row(os.Stdout, s, Size(c, s))
	}
}

// builtIn are the scenarios of docs/scaling.md: issue 11's load, then the
// same cluster at 2.5x and 10x, and a flash crowd (every edge watching far
// more keys), and one group of four when 1M streams are split (every node
// registers in every group; each edge watches a quarter of its keys there).
func builtIn(hb time.Duration) []Scenario {
	return []Scenario{
		{Name: "issue 11", Streams: 100_000, Edges: 500, Origins: 200, KeysPer: 200, Churn: 1000, Lookups: 1000, Heartbeat: hb},
		{Name: "popular keys", Streams: 100_000, Edges: 500, Origins: 200, KeysPer: 2000, Churn: 1000, Lookups: 1000, Heartbeat: hb},
		{Name: "250k", Streams: 250_000, Edges: 1250, Origins: 500, KeysPer: 200, Churn: 2500, Lookups: 2500, Heartbeat: hb},
		{Name: "1M", Streams: 1_000_000, Edges: 5000, Origins: 2000, KeysPer: 200, Churn: 10_000, Lookups: 10_000, Heartbeat: hb},
		{Name: "1M, one of 4 groups", Streams: 250_000, Edges: 5000, Origins: 2000, KeysPer: 50, Churn: 2500, Lookups: 2500, Heartbeat: hb},
	}
}
