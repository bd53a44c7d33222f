// Package lbchecks is the drill "lb-checks" (issue #10, drill 6): what a
// load balancer's TCP health checks do to every listening port of every
// component. 1,000 bare TCP connects a second per port (a handshake, then
// close: half with FIN, half with RST, as checkers differ), on the OCM's
// gRPC and admin ports and the origin's and edge's RTMP, HTTP and admin
// ports at once, for 10 s (3 s in the short form). Targets: no connect is
// refused, no component logs an error, and each component's goroutines
// and open file descriptors (its /metrics go_goroutines,
// process_open_fds) are back to their baseline within 10 s.
package lbchecks

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livecluster/livecluster/scripts/drills/internal/cluster"
	"github.com/livecluster/livecluster/scripts/drills/internal/drill"
)

// Drill is the lb-checks drill.
var Drill = drill.Drill{
	Name: "lb-checks",
	Doc:  "1,000 bare TCP connects/s on every port of every component: no error logs, goroutines and fds back to baseline",
	Run:  run,
}

const (
	rate = 1000 // connects per second per port
	// Allowed above baseline once settled: the metrics scrape's own
	// connection and goroutines, and runtime helpers that come and go.
	goroutineSlack = 3
	fdSlack        = 2
	settle         = 10 * time.Second
)

type target struct {
	k     *cluster.Container
	ports []int
}

func run(ctx context.Context, e *drill.Env) (drill.Result, error) {
	res := drill.Result{Figures: map[string]any{}}
	dur := 10 * time.Second
	if e.Short {
		dur = 3 * time.Second
	}
	c, err := e.NewCluster(ctx, "lb-checks")
	if err != nil {
		return res, err
	}
	defer c.Close()
	fail := func(err error) (drill.Result, error) { c.Fail(); return res, err }
	ks, err := c.RunAll(ctx, c.OCMSpec("ocm", nil), c.OriginSpec("origin", "ocm", drill.OriginEnv), c.EdgeSpec("edge", "ocm", nil))
	if err != nil {
		return fail(err)
	}
	ocm, origin, edge := ks[0], ks[1], ks[2]
	targets := []target{
		{ocm, []int{cluster.PortGRPC, cluster.PortAdmin}},
		{origin, []int{cluster.PortRTMP, cluster.PortHTTP, cluster.PortAdmin}},
		{edge, []int{cluster.PortRTMP, cluster.PortHTTP, cluster.PortAdmin}},
	}
	// Baseline once the cluster is quiet: the nodes registered, the first
	// heartbeats done.
	if err := drill.Sleep(ctx, 2*time.Second); err != nil {
		return fail(err)
	}
	base := map[string][2]float64{}
	logsBefore := map[string]int{}
	for _, t := range targets {
		g, f, err := gauges(ctx, t.k)
		if err != nil {
			return fail(err)
		}
		base[t.k.Short] = [2]float64{g, f}
		b, err := t.k.Logs(ctx)
		if err != nil {
			return fail(err)
		}
		logsBefore[t.k.Short] = bytes.Count(b, []byte("\n"))
	}

	e.Logf("lb-checks: %d bare TCP connects/s on each of 8 ports for %v", rate, dur)
	type portRes struct {
		name                 string
		ok, failed, timedOut int64
		firstErr             string
		maxConnectLat        time.Duration
	}
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		prs []*portRes
	)
	for _, t := range targets {
		for _, port := range t.ports {
			addr, err := t.k.Addr(ctx, port)
			if err != nil {
				return fail(err)
			}
			pr := &portRes{name: t.k.Short + ":" + strconv.Itoa(port)}
			prs = append(prs, pr)
			wg.Go(func() {
				ok, bad, slow, first, lat := hammer(ctx, addr, dur)
				mu.Lock()
				pr.ok, pr.failed, pr.timedOut, pr.firstErr, pr.maxConnectLat = ok, bad, slow, first, lat
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	if ctx.Err() != nil {
		return fail(ctx.Err())
	}
	ports := map[string]any{}
	for _, pr := range prs {
		pf := map[string]any{"connects": pr.ok, "refused": pr.failed, "timed_out": pr.timedOut,
			"per_s": float64(pr.ok+pr.failed+pr.timedOut) / dur.Seconds(), "max_connect_ms": drill.Ms(pr.maxConnectLat)}
		if pr.firstErr != "" {
			pf["first_error"] = pr.firstErr
		}
		ports[pr.name] = pf
		// A refused or reset connect is the node's failure. A connect that
		// times out (its SYN dropped twice: the accept queue full on a
		// saturated machine, where the generator shares the CPUs) is
		// reported, not judged; the pace itself (per_s) is the generator's.
		res.Check(pr.failed == 0, "%s: %d of %d connects refused (%s)", pr.name, pr.failed, pr.ok+pr.failed+pr.timedOut, pr.firstErr)
	}
	res.Figures["ports"] = ports
	res.Figures["seconds_of_connects"] = dur.Seconds()

	// Back to baseline: poll until every component is, or settle ends.
	t0 := time.Now()
	comps := map[string]any{}
	for _, t := range targets {
		var g, f float64
		for {
			if g, f, err = gauges(ctx, t.k); err != nil {
				return fail(err)
			}
			if g <= base[t.k.Short][0]+goroutineSlack && f <= base[t.k.Short][1]+fdSlack {
				break
			}
			if time.Since(t0) > settle || drill.Sleep(ctx, 250*time.Millisecond) != nil {
				break
			}
		}
		b, err := t.k.Logs(ctx)
		if err != nil {
			return fail(err)
		}
		errs, warns, sample := levels(b, logsBefore[t.k.Short])
		cf := map[string]any{
			"goroutines_before": base[t.k.Short][0], "goroutines_after": g,
			"fds_before": base[t.k.Short][1], "fds_after": f,
			"error_logs": errs, "warn_logs": warns,
		}
		if sample != "" {
			cf["first_log"] = sample
		}
		comps[t.k.Short] = cf
		res.Check(errs == 0, "%s logged %d errors (%s)", t.k.Short, errs, sample)
		res.Check(g <= base[t.k.Short][0]+goroutineSlack, "%s: %v goroutines %v after the connects, baseline %v", t.k.Short, g, settle, base[t.k.Short][0])
		res.Check(f <= base[t.k.Short][1]+fdSlack, "%s: %v open fds %v after the connects, baseline %v", t.k.Short, f, settle, base[t.k.Short][1])
	}
	res.Figures["components"] = comps
	res.Figures["settled_ms"] = drill.Ms(time.Since(t0))
	if len(res.Failed) > 0 {
		c.Fail()
	}
	return res, nil
}

// hammer opens rate bare TCP connections a second to addr for d, closing
// each at once, odd ones with RST (linger 0). It paces by the clock (every
// 10 ms it starts what is due), so a slow moment is caught up, with at most
// 256 connects in flight. It returns the successful, failed and timed-out
// (2 s) connects, the first failure and the slowest connect.
func hammer(ctx context.Context, addr string, d time.Duration) (ok, failed, timedOut int64, firstErr string, maxLat time.Duration) {
	var okN, badN, slowN atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	dialer := &net.Dialer{Timeout: 2 * time.Second}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	sem := make(chan struct{}, 256)
	launched := 0
	for {
		select {
		case <-ctx.Done():
		case now := <-tick.C:
			el := now.Sub(start)
			if el < d {
				for due := int(el.Seconds() * rate); launched < due; launched++ {
					sem <- struct{}{}
					i := launched
					wg.Go(func() {
						defer func() { <-sem }()
						t0 := time.Now()
						conn, err := dialer.DialContext(ctx, "tcp", addr)
						lat := time.Since(t0)
						mu.Lock()
						maxLat = max(maxLat, lat)
						if err != nil && firstErr == "" && ctx.Err() == nil {
							firstErr = err.Error()
						}
						mu.Unlock()
						if err != nil {
							var ne net.Error
							switch {
							case ctx.Err() != nil:
							case errors.As(err, &ne) && ne.Timeout():
								slowN.Add(1)
							default:
								badN.Add(1)
							}
							return
						}
						okN.Add(1)
						if tc, ok := conn.(*net.TCPConn); ok && i%2 == 1 {
							_ = tc.SetLinger(0) // close with RST
						}
						_ = conn.Close()
					})
				}
				continue
			}
		}
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return okN.Load(), badN.Load(), slowN.Load(), firstErr, maxLat
	}
}

// gauges reads go_goroutines and process_open_fds.
func gauges(ctx context.Context, k *cluster.Container) (float64, float64, error) {
	m, err := k.Metrics(ctx)
	if err != nil {
		return 0, 0, err
	}
	g, ok1 := m["go_goroutines"]
	f, ok2 := m["process_open_fds"]
	if !ok1 || !ok2 {
		return 0, 0, fmt.Errorf("%s: no go_goroutines or process_open_fds in /metrics", k.Name)
	}
	return g, f, nil
}

// levels counts the ERROR and WARN JSON log lines after the first skip
// lines, and returns the first of them.
func levels(b []byte, skip int) (errs, warns int, first string) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for i := 0; sc.Scan(); i++ {
		if i < skip {
			continue
		}
		var l struct {
			Level string `json:"level"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		switch l.Level {
		case "ERROR":
			errs++
		case "WARN":
			warns++
		default:
			continue
		}
		if first == "" {
			first = sc.Text()
			if len(first) > 300 {
				first = first[:300]
			}
		}
	}
	return errs, warns, first
}
