package e2e

import (
	"net"
	"testing"
	"time"
)

// An edge whose pull from the owner stalls (the link between them is cut
// while the owner keeps its lease and its publisher) drops that pull after
// edge.upstream.stallTimeout and pulls again from the owner the OCM names
// (the same origin here), holding its players, silent and connected,
// meanwhile. Both pull protocols: RTMP (whose read deadline would notice
// after 30 s) and HTTP-FLV (which would never notice). Before, the players
// stayed silent until TCP or a new owner ended the leg.
func TestUpstreamStallRepulls(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	// The origin advertises 127.0.0.2: edges reach it through the cuttable
	// links below; the publisher and the OCM reach it directly.
	o := c.startOriginAdvertising("origin-0", "127.0.0.2")
	var links []*cutProxy
	for _, a := range []string{o.rtmp, o.http} {
		_, p, _ := net.SplitHostPort(a)
		links = append(links, startCutProxy(t, net.JoinHostPort("127.0.0.2", p), a))
	}
	const stall = 2 * time.Second
	stallEnv := "LIVECLUSTER_EDGE_UPSTREAM_STALL_TIMEOUT=" + stall.String()
	eRTMP := c.startEdgeEnv("edge-rtmp", []string{stallEnv})
	eFLV := c.startEdgeEnv("edge-flv", []string{stallEnv, "LIVECLUSTER_EDGE_UPSTREAM_PROTOCOL=flv"})
	c.publish("ffmpeg-0", "rtmp://"+o.rtmp+"/live/st")
	c.waitOwner("st", "origin-0", 15*time.Second)

	var players []*player
	for _, e := range []*node{eRTMP, eFLV} {
		for _, u := range []string{"rtmp://" + e.rtmp + "/live/st", "http://" + e.http + "/live/st.flv"} {
			var p *player
			waitFor(t, "player "+u, 15*time.Second, func() bool {
				var err error
				p, err = startPlayer(u)
				return err == nil
			})
			t.Cleanup(p.stop)
			players = append(players, p)
		}
	}
	flowsAfter(t, players, counts(players), 70, 5*time.Second)

	n := 0
	for _, l := range links {
		n += l.freeze()
	}
	if n < 2 {
		t.Fatalf("froze %d connections, want the two edges' pulls at least", n)
	}
	cut := time.Now()
	// Media again within the stall timeout plus a redial: 2 s of media
	// within stall + 6 s of the cut (the RTMP pull's own read deadline is
	// 30 s, an HTTP-FLV pull has none).
	flowsAfter(t, players, counts(players), 140, stall+6*time.Second)
	t.Logf("players got 2 s of media again %v after the cut (stall timeout %v)", time.Since(cut), stall)
	for i, p := range players {
		st := p.stats()
		if st.err != nil {
			t.Errorf("player %d disconnected: %v", i, st.err)
		}
		if st.backwards > 0 {
			t.Errorf("player %d: timestamps went backwards %d times", i, st.backwards)
		}
	}
	for _, e := range []*node{eRTMP, eFLV} {
		if len(logLines(e.Proc, "upstream stalled: no media; dropping it and pulling again")) == 0 {
			t.Errorf("%s logged no stalled upstream", e.id)
		}
		if got := metric(t, e.admin, "livecluster_edge_upstream_stalls_total"); got < 1 {
			t.Errorf("%s: stalls metric = %v", e.id, got)
		}
	}
}
