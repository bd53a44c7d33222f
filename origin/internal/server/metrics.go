package server

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the origin's metrics outside the publish sessions (those are
// publish.Metrics). Like every package of the binaries: a struct made by
// one constructor that registers it on the node's registry, counters and
// gauges updated where things happen, and a collector for what is read
// from state at scrape time.
type metrics struct {
	claims      *prometheus.CounterVec // result, for owner.Options.Claims
	hlsRequests *prometheus.CounterVec // kind, for web.Options.HLSRequests
}

// newMetrics registers the event metrics; registerCollector, once the
// server's parts exist, the ones read at scrape time.
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livecluster_origin_claims_total",
			Help: "Stream ownership claims at the OCM, by result.",
		}, []string{"result"}),
		hlsRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livecluster_origin_hls_requests_total",
			Help: "HLS requests served (or answered 404), by kind: playlist or segment.",
		}, []string{"kind"}),
	}
	reg.MustRegister(m.claims, m.hlsRequests)
	return m
}

func registerCollector(reg prometheus.Registerer, s *Server) { reg.MustRegister(&collector{s: s}) }

var (
	publishersDesc = prometheus.NewDesc("livecluster_origin_publishers", "Connected publishers.", nil, nil)
	playersDesc    = prometheus.NewDesc("livecluster_origin_players",
		"Connected players, by protocol (HLS is counted in livecluster_origin_hls_requests_total).", []string{"protocol"}, nil)
	receivedDesc = prometheus.NewDesc("livecluster_origin_received_bytes_total", "Bytes received from clients (publishers).", nil, nil)
	sentDesc     = prometheus.NewDesc("livecluster_origin_sent_bytes_total", "Bytes sent to clients (RTMP, HTTP-FLV, HLS).", nil, nil)
	skippedDesc  = prometheus.NewDesc("livecluster_origin_slow_readers_skipped_total", "Times a slow player was moved to the next keyframe.", nil, nil)
	droppedDesc  = prometheus.NewDesc("livecluster_origin_slow_readers_dropped_total", "Slow players dropped after repeated overflows.", nil, nil)
)

// collector reads the clients registry and the hubs at scrape time.
type collector struct{ s *Server }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{publishersDesc, playersDesc, receivedDesc, sentDesc, skippedDesc, droppedDesc} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	pubs, players := s.clients.Counts()
	in, out := s.clients.Bytes()
	ch <- prometheus.MustNewConstMetric(publishersDesc, prometheus.GaugeValue, float64(pubs))
	for _, proto := range []string{"rtmp", "flv"} {
		ch <- prometheus.MustNewConstMetric(playersDesc, prometheus.GaugeValue, float64(players[proto]), proto)
	}
	ch <- prometheus.MustNewConstMetric(receivedDesc, prometheus.CounterValue, float64(in))
	ch <- prometheus.MustNewConstMetric(sentDesc, prometheus.CounterValue, float64(out+s.hlsBytes.Load()))
	skipped, dropped := s.pubs.SlowReaders()
	ch <- prometheus.MustNewConstMetric(skippedDesc, prometheus.CounterValue, float64(skipped))
	ch <- prometheus.MustNewConstMetric(droppedDesc, prometheus.CounterValue, float64(dropped))
}
