package main

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livecluster/livecluster/node/proctest"
)

// TestEtcdPortTaken: with the embedded etcd's client or peer port held by
// another process, ocm exits 1 with an error naming the address and the
// keys to change, and does not panic.
func TestEtcdPortTaken(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the ocm binary")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin, err := proctest.Build(ctx, dir, "github.com/livecluster/livecluster/ocm/cmd/ocm")
	if err != nil {
		t.Fatal(err)
	}
	for _, which := range []string{"client", "peer"} {
		t.Run(which, func(t *testing.T) {
			held, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer held.Close()
			client, peer := "http://"+held.Addr().String(), "http://"+proctest.FreeAddr(t)
			if which == "peer" {
				client, peer = "http://"+proctest.FreeAddr(t), "http://"+held.Addr().String()
			}
			p := proctest.Start(t, "ocm", bin, "--grpc-listen", proctest.FreeAddr(t), "--admin-listen", proctest.FreeAddr(t),
				"--data-dir", filepath.Join(t.TempDir(), "etcd"), "--etcd-client-url", client, "--etcd-peer-url", peer)
			if code := p.Wait(60 * time.Second); code != 1 {
				t.Fatalf("exit code %d, want 1", code)
			}
			out := p.Output()
			for _, want := range []string{which + " URL http://" + held.Addr().String(), "address already in use", "etcd.clientURL", "etcd.peerURL", "--etcd-client-url"} {
				if !strings.Contains(out, want) {
					t.Errorf("output does not say %q:\n%s", want, out)
				}
			}
			if strings.Contains(out, "panic") {
				t.Errorf("panicked:\n%s", out)
			}
		})
	}
}
