// Package ocmdrill holds what the control-plane drills (ocm-failover,
// etcd-quorum, partition) share: an etcd cluster of livecluster/etcd
// containers, OCM replicas pointed at it, the simulated origins' history
// log, and the linearizability check of the histories (lincheck) with its
// figures.
package ocmdrill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/livecluster/livecluster/node/ocmclient"
	"github.com/livecluster/livecluster/scripts/drills/internal/cluster"
	"github.com/livecluster/livecluster/scripts/drills/internal/drill"
	"github.com/livecluster/livecluster/scripts/drills/internal/lincheck"
)

// EtcdSpecs are the members of a static etcd cluster of n containers named
// etcd-0..etcd-<n-1> (client 2379, peer 2380, data on the container's
// tmpfs /data).
func EtcdSpecs(c *cluster.Cluster, n int) []cluster.Spec {
	name := func(i int) string { return c.Network() + "-etcd-" + strconv.Itoa(i) }
	var initial []string
	for i := range n {
		initial = append(initial, fmt.Sprintf("etcd-%d=http://%s:2380", i, name(i)))
	}
	var specs []cluster.Spec
	for i := range n {
		specs = append(specs, cluster.Spec{Name: "etcd-" + strconv.Itoa(i), Image: "etcd", Args: []string{
			"--name", fmt.Sprintf("etcd-%d", i), "--data-dir", "/data/etcd",
			"--listen-client-urls", "http://0.0.0.0:2379", "--advertise-client-urls", "http://" + name(i) + ":2379",
			"--listen-peer-urls", "http://0.0.0.0:2380", "--initial-advertise-peer-urls", "http://" + name(i) + ":2380",
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", c.Network(),
		}})
	}
	return specs
}

// Endpoints is the OCM's etcd.endpoints for these members.
func Endpoints(members []*cluster.Container) string {
	var eps []string
	for _, m := range members {
		eps = append(eps, m.Name+":2379")
	}
	return strings.Join(eps, ",")
}

// OCMSpec is an OCM replica using the external etcd at endpoints; env
// adds or overrides variables.
func OCMSpec(name, endpoints string, env map[string]string) cluster.Spec {
	e := map[string]string{"LIVECLUSTER_NODE_ID": name, "LIVECLUSTER_ETCD_ENDPOINTS": endpoints}
	for k, v := range env {
		e[k] = v
	}
	return cluster.Spec{Name: name, Image: "ocm", Env: e}
}

// GRPCAddrs are the replicas' gRPC addresses as the host reaches them.
func GRPCAddrs(ctx context.Context, ocms ...*cluster.Container) ([]string, error) {
	var out []string
	for _, k := range ocms {
		a, err := k.Addr(ctx, cluster.PortGRPC)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// History opens the drill's history log, Dir/<name>-history.jsonl (a new
// file).
func History(e *drill.Env, name string) (*ocmclient.History, string, error) {
	p := filepath.Join(e.Dir, name+"-history.jsonl")
	h, err := ocmclient.OpenHistory(p)
	return h, p, err
}

// CheckHistories checks the histories in files for linearizability, puts
// the figures under "lincheck" and fails res when the verdict is not Ok
// (the visualization is then Dir/<name>-linearizability.html).
func CheckHistories(e *drill.Env, name string, res *drill.Result, files ...string) error {
	evs, err := lincheck.ReadFiles(files...)
	if err != nil {
		return err
	}
	t0 := time.Now()
	html := filepath.Join(e.Dir, name+"-linearizability.html")
	v, err := lincheck.Check(evs, time.Minute, html)
	if err != nil {
		return err
	}
	res.Figures["lincheck"] = map[string]any{"calls": v.Calls, "keys": v.Keys, "verdict": v.Verdict,
		"bad_keys": v.BadKeys, "check_ms": time.Since(t0).Milliseconds()}
	res.Check(v.Verdict == "Ok", "history of %d calls on %d streams not linearizable (%s; keys %v): see %s", v.Calls, v.Keys, v.Verdict, v.BadKeys, v.HTML)
	res.Check(v.Calls > 0, "empty history: no call recorded")
	return nil
}

// Leader returns the index in members of etcd's leader (from each member's
// etcd_server_is_leader metric on its client port), or an error when none
// says so.
func Leader(ctx context.Context, members []*cluster.Container) (int, error) {
	for i, m := range members {
		addr, err := m.Addr(ctx, cluster.PortEtcd)
		if err != nil {
			return -1, err
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		req, err := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+addr+"/metrics", nil)
		if err != nil {
			cancel()
			return -1, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		if strings.Contains(string(b), "\netcd_server_is_leader 1\n") {
			return i, nil
		}
	}
	return -1, errors.New("no etcd member reports itself leader")
}
