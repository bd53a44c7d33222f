// Package etcdtest starts real embedded etcd members for tests.
package etcdtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/livecluster/livecluster/ocm/internal/etcdserver"
)

// FreeURL returns an http://127.0.0.1:<port> URL on a port that was free a
// moment ago.
func FreeURL() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return "http://" + l.Addr().String(), nil
}

// Member is an embedded etcd that can be stopped and started again on the
// same data dir and ports.
type Member struct {
	Config etcdserver.Config
	Server *etcdserver.Server
}

// Start starts a member in dir on free loopback ports.
func Start(dir string) (*Member, error) {
	c, err := FreeURL()
	if err != nil {
		return nil, err
	}
	p, err := FreeURL()
	if err != nil {
		return nil, err
	}
	m := &Member{Config: etcdserver.Config{Dir: dir, ClientURL: c, PeerURL: p}}
	if err := m.Restart(); err != nil {
		return nil, err
	}
	return m, nil
}

// Restart starts the member again after Stop.
func (m *Member) Restart() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := etcdserver.Start(ctx, m.Config)
	if err != nil {
		return fmt.Errorf("etcdtest: %w", err)
	}
	m.Server = s
	return nil
}

// Stop stops the member.
func (m *Member) Stop() { m.Server.Close() }

// Endpoints are the member's client endpoints.
func (m *Member) Endpoints() []string { return []string{m.Config.ClientURL} }

// Client dials the member.
func (m *Member) Client() (*clientv3.Client, error) {
	return etcdserver.Dial(etcdserver.ClientConfig{Endpoints: m.Endpoints()})
}

// ClusterMember is one member of a multi-member embedded etcd cluster
// (StartCluster): it can be stopped and started again on its data dir and
// ports, so a test can take members away and give them back.
type ClusterMember struct {
	Name                        string
	Dir, ClientURL, PeerURL     string
	initialCluster, clusterName string
	e                           *embed.Etcd
}

// StartCluster starts an n-member etcd cluster, each member with a data
// dir under dir and free loopback ports, and returns once every member
// serves; on failure it stops the members it started.
func StartCluster(ctx context.Context, dir string, n int) ([]*ClusterMember, error) {
	var ms []*ClusterMember
	var initial []string
	for i := range n {
		c, err := FreeURL()
		if err != nil {
			return nil, err
		}
		p, err := FreeURL()
		if err != nil {
			return nil, err
		}
		m := &ClusterMember{Name: fmt.Sprintf("m%d", i), Dir: filepath.Join(dir, fmt.Sprintf("m%d", i)), ClientURL: c, PeerURL: p, clusterName: filepath.Base(dir)}
		initial = append(initial, m.Name+"="+p)
		ms = append(ms, m)
	}
	stopAll := func() {
		for _, m := range ms {
			m.Stop()
		}
	}
	for _, m := range ms {
		m.initialCluster = strings.Join(initial, ",")
		if err := m.launch(); err != nil {
			stopAll()
			return nil, err
		}
	}
	for _, m := range ms {
		if err := m.waitReady(ctx); err != nil {
			stopAll()
			return nil, err
		}
	}
	return ms, nil
}

// launch starts the member's etcd without waiting for it to join.
func (m *ClusterMember) launch() error {
	cu, err := url.Parse(m.ClientURL)
	if err != nil {
		return err
	}
	pu, err := url.Parse(m.PeerURL)
	if err != nil {
		return err
	}
	cfg := embed.NewConfig()
	cfg.Name = m.Name
	cfg.Dir = m.Dir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = m.initialCluster
	cfg.InitialClusterToken = m.clusterName
	cfg.LogLevel = "error"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("etcdtest: start member %s: %w", m.Name, err)
	}
	m.e = e
	return nil
}

func (m *ClusterMember) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	select {
	case <-m.e.Server.ReadyNotify():
		return nil
	case err := <-m.e.Err():
		return fmt.Errorf("etcdtest: member %s: %w", m.Name, err)
	case <-ctx.Done():
		return fmt.Errorf("etcdtest: member %s not ready: %w", m.Name, ctx.Err())
	}
}

// Stop stops the member (a leader hands its leadership over first, as
// etcd does on a clean stop); stopping a stopped member does nothing.
func (m *ClusterMember) Stop() {
	if m.e != nil {
		m.e.Close()
		m.e = nil
	}
}

// Restart starts a stopped member again on its data dir. It returns once
// the member runs, not once it has a leader (which needs a quorum).
func (m *ClusterMember) Restart() error { return m.launch() }

// Running reports whether the member was started and not stopped.
func (m *ClusterMember) Running() bool { return m.e != nil }

// Leader returns the member id of the leader this member knows (0: none,
// an election is under way or there is no quorum) and this member's own
// id.
func (m *ClusterMember) Leader() (leader, self uint64) {
	return uint64(m.e.Server.Leader()), uint64(m.e.Server.MemberID())
}

// ClusterEndpoints are the client URLs of every member, running or not.
func ClusterEndpoints(ms []*ClusterMember) []string {
	var eps []string
	for _, m := range ms {
		eps = append(eps, m.ClientURL)
	}
	return eps
}

// RunTests is a package's TestMain around one shared member: it starts a
// member in a new temporary directory, passes it to use, runs the tests,
// then stops the member and removes the directory. It returns the exit code
// for os.Exit; when the member cannot start it prints why and returns 1
// without running any test.
func RunTests(m *testing.M, use func(*Member) error) int {
	dir, err := os.MkdirTemp("", "ocm-etcdtest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcdtest:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	mem, err := Start(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcdtest: starting etcd:", err)
		return 1
	}
	defer mem.Stop()
	if err := use(mem); err != nil {
		fmt.Fprintln(os.Stderr, "etcdtest:", err)
		return 1
	}
	return m.Run()
}
