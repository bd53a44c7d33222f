// Package etcdtest starts real embedded etcd members for tests.
package etcdtest

import (
	"context"
	"fmt"
	"net"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

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
