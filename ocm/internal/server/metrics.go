package server

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/livecluster/livecluster/ocm/internal/cache"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// Metrics are the OCM's Prometheus metrics, registered on the Registerer
// given to NewMetrics (never the global one).
type Metrics struct {
	rpc        *prometheus.HistogramVec
	etcdErrors *prometheus.CounterVec
	resyncs    prometheus.Counter
	dropped    prometheus.Counter
	// sessions are the KeepSession streams this replica holds; breaks count
	// what became of each stream that broke without a shutdown.
	sessions prometheus.Gauge
	breaks   *prometheus.CounterVec
	reg      prometheus.Registerer
	// okObs caches the OK-code histogram of each full method name: resolving
	// labels (hashing, a locked map) on every call was a visible share of a
	// cheap lookup's cost. It is bounded by the registered methods.
	okObs sync.Map // string -> prometheus.Observer
}

// NewMetrics creates and registers the metrics that do not need the cache.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		rpc: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ocm_grpc_request_duration_seconds",
			Help:    "OCM gRPC request latency by method and status code (streams: whole stream lifetime).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"method", "code"}),
		etcdErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ocm_etcd_errors_total",
			Help: "etcd requests that failed (timeout, unreachable), by operation.",
		}, []string{"op"}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ocm_cache_resyncs_total",
			Help: "Full re-reads of etcd by the cache after a compaction or a broken watch.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ocm_watch_subscribers_dropped_total",
			Help: "WatchStreams subscribers disconnected because they fell behind.",
		}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ocm_session_streams",
			Help: "KeepSession streams (node liveness) open on this replica.",
		}),
		breaks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ocm_session_breaks_total",
			Help: "KeepSession streams that broke without a replica shutdown, by outcome after the grace: revoked (the node's lease was revoked), returned (the node opened a new stream or ended its session), error (etcd failed; the lease keeps its TTL).",
		}, []string{"outcome"}),
		reg: reg,
	}
	for _, c := range []prometheus.Collector{m.rpc, m.etcdErrors, m.resyncs, m.dropped, m.sessions, m.breaks} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// EtcdError counts an etcd failure (for store.Options.OnEtcdError).
func (m *Metrics) EtcdError(op string) { m.etcdErrors.WithLabelValues(op).Inc() }

// Resync counts a cache resync (for cache.Options.OnResync).
func (m *Metrics) Resync(string) { m.resyncs.Inc() }

// RegisterCache registers the gauges read from the cache at scrape time.
func (m *Metrics) RegisterCache(c *cache.Cache) error {
	return m.reg.Register(&cacheCollector{c: c})
}

var (
	streamsDesc = prometheus.NewDesc("ocm_streams", "Owned streams in this replica's cache.", nil, nil)
	nodesDesc   = prometheus.NewDesc("ocm_nodes", "Registered nodes in this replica's cache, by role and state.", []string{"role", "state"}, nil)
	subsDesc    = prometheus.NewDesc("ocm_watch_subscribers", "Open WatchStreams subscriptions on this replica.", nil, nil)
	revDesc     = prometheus.NewDesc("ocm_cache_revision", "etcd revision this replica's cache reflects.", nil, nil)
)

type cacheCollector struct{ c *cache.Cache }

func (cc *cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- streamsDesc
	ch <- nodesDesc
	ch <- subsDesc
	ch <- revDesc
}

func (cc *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	counts := cc.c.Counts()
	ch <- prometheus.MustNewConstMetric(streamsDesc, prometheus.GaugeValue, float64(counts.Streams))
	// Always report every role/state pair so dashboards see zeros.
	for _, role := range []ocmv1.NodeRole{ocmv1.NodeRole_NODE_ROLE_ORIGIN, ocmv1.NodeRole_NODE_ROLE_EDGE} {
		for _, st := range []ocmv1.NodeState{ocmv1.NodeState_NODE_STATE_READY, ocmv1.NodeState_NODE_STATE_DRAINING} {
			n := counts.Nodes[[2]int32{int32(role), int32(st)}]
			ch <- prometheus.MustNewConstMetric(nodesDesc, prometheus.GaugeValue, float64(n), roleName(role), stateName(st))
		}
	}
	ch <- prometheus.MustNewConstMetric(subsDesc, prometheus.GaugeValue, float64(cc.c.Subscribers()))
	ch <- prometheus.MustNewConstMetric(revDesc, prometheus.GaugeValue, float64(cc.c.Revision()))
}

func roleName(r ocmv1.NodeRole) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "NODE_ROLE_"))
}

func stateName(s ocmv1.NodeState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "NODE_STATE_"))
}

func shortMethod(full string) string {
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[i+1:]
	}
	return full
}

func (m *Metrics) observe(fullMethod string, err error, d time.Duration) {
	code := status.Code(err)
	if code != codes.OK {
		m.rpc.WithLabelValues(shortMethod(fullMethod), code.String()).Observe(d.Seconds())
		return
	}
	o, ok := m.okObs.Load(fullMethod)
	if !ok {
		o, _ = m.okObs.LoadOrStore(fullMethod, m.rpc.WithLabelValues(shortMethod(fullMethod), codes.OK.String()))
	}
	o.(prometheus.Observer).Observe(d.Seconds())
}

// UnaryInterceptor records request latency by method and code.
func (m *Metrics) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	t := time.Now()
	resp, err := h(ctx, req)
	m.observe(info.FullMethod, err, time.Since(t))
	return resp, err
}

// StreamInterceptor records stream lifetimes by method and code.
func (m *Metrics) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	t := time.Now()
	err := h(srv, ss)
	m.observe(info.FullMethod, err, time.Since(t))
	return err
}
