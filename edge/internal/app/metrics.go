package app

import "github.com/prometheus/client_golang/prometheus"

// metrics are the edge's metrics outside its packages (those have their
// own: relay.Metrics, forward.Metrics, hlsproxy.Metrics): the pattern of
// every binary, a struct made by one constructor that registers it on the
// node's registry, updated where things happen.
type metrics struct {
	lookups *prometheus.CounterVec // result, from the directory
	watchUp prometheus.Gauge
	players *prometheus.GaugeVec // protocol
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livecluster_edge_owner_lookups_total",
			Help: "Owner lookups by result (cache: fresh; stale: a cached owner served while it is looked up again; ok, not_found, error: the OCM's answers).",
		}, []string{"result"}),
		watchUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "livecluster_edge_stream_watch_up", Help: "1 while the WatchStreams stream to the OCM is established.",
		}),
		players: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "livecluster_edge_players", Help: "Connected players by protocol (rtmp, flv).",
		}, []string{"protocol"}),
	}
	m.players.WithLabelValues(protoRTMP)
	m.players.WithLabelValues(protoFLV)
	reg.MustRegister(m.lookups, m.watchUp, m.players)
	return m
}

// lookup counts a directory lookup (directory.Options.OnLookup).
func (m *metrics) lookup(result string) { m.lookups.WithLabelValues(result).Inc() }

// watchState follows the stream watch (directory.Options.OnWatchState).
func (m *metrics) watchState(up bool) {
	if up {
		m.watchUp.Set(1)
	} else {
		m.watchUp.Set(0)
	}
}
