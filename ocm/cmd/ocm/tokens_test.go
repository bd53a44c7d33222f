package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/livecluster/livecluster/node/authn"
	"github.com/livecluster/livecluster/node/config"
	"github.com/livecluster/livecluster/node/proctest"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// TestTokensReload: auth.tokens is live on a real ocm process (its embedded
// etcd) reloading its config file. A token added by a reload is accepted
// for new calls, a removed one is refused UNAUTHENTICATED, and an open
// stream authenticated with the removed token is ended UNAUTHENTICATED
// while one with a token still listed goes on. A list that cannot be
// loaded (a missing token file), or that would turn authentication off, is
// refused and the running list stays.
func TestTokensReload(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the ocm binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin, err := proctest.Build(ctx, dir, "github.com/livecluster/livecluster/ocm/cmd/ocm")
	if err != nil {
		t.Fatal(err)
	}
	const (
		edgeA   = "edge-token-A-0123456789abcdef"
		edgeB   = "edge-token-B-0123456789abcdef"
		originO = "origin-token-O-0123456789abcd"
	)
	bFile := filepath.Join(dir, "edge-b.token")
	writeFile(t, bFile, edgeB+"\n")
	grpcAddr, adminAddr := proctest.FreeAddr(t), proctest.FreeAddr(t)
	base := fmt.Sprintf(`
nodeId: ocm-test
adminListen: %q
grpc:
  listen: %q
etcd:
  dataDir: %q
  clientURL: http://%s
  peerURL: http://%s
shutdown:
  startWait: 100ms
  finalWait: 100ms
`, adminAddr, grpcAddr, filepath.Join(dir, "etcd"), proctest.FreeAddr(t), proctest.FreeAddr(t))
	cfg := filepath.Join(dir, "ocm.yaml")
	writeFile(t, cfg, base+fmt.Sprintf(`auth:
  tokens:
    - {identity: "edge:*", token: %s}
    - {identity: "origin:*", token: %s}
`, edgeA, originO))
	ocm := proctest.Start(t, "ocm", bin, "--config", cfg)
	proctest.WaitHTTP(t, "http://"+adminAddr+"/readyz", 200, 30*time.Second)

	client := func(tok string) ocmv1.OCMServiceClient {
		tk, err := authn.NewToken("test", config.Token{Token: tok}, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(authn.PerRPC(tk, false)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		return ocmv1.NewOCMServiceClient(cc)
	}
	a, b, o := client(edgeA), client(edgeB), client(originO)
	list := func(c ocmv1.OCMServiceClient) codes.Code {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := c.ListNodes(cctx, &ocmv1.ListNodesRequest{})
		return status.Code(err)
	}
	// watch opens a WatchStreams and returns the channel its end arrives on,
	// once the stream was accepted (its SYNCED event came).
	watch := func(c ocmv1.OCMServiceClient) <-chan error {
		t.Helper()
		ws, err := c.WatchStreams(ctx, &ocmv1.WatchStreamsRequest{InitialState: true})
		if err != nil {
			t.Fatal(err)
		}
		if ev, err := ws.Recv(); err != nil || ev.GetType() != ocmv1.WatchStreamsResponse_EVENT_TYPE_SYNCED {
			t.Fatalf("watch: first event %v, %v; want SYNCED", ev, err)
		}
		end := make(chan error, 1)
		go func() {
			for {
				if _, err := ws.Recv(); err != nil {
					end <- err
					return
				}
			}
		}()
		return end
	}
	reloadTo := func(tokens string) {
		t.Helper()
		writeFile(t, cfg, base+"auth:\n  tokens:\n"+tokens)
	}
	waitLog := func(s string, n int) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for strings.Count(ocm.Output(), s) < n {
			if time.Now().After(deadline) {
				t.Fatalf("ocm did not log %q (%d times) within 15s", s, n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	if got := list(a); got != codes.OK {
		t.Fatalf("token A before the reload: %v", got)
	}
	if got := list(b); got != codes.Unauthenticated {
		t.Fatalf("token B before the reload: %v, want Unauthenticated", got)
	}
	reg, err := o.Register(ctx, &ocmv1.RegisterRequest{Node: &ocmv1.Node{Id: "origin-a", Role: ocmv1.NodeRole_NODE_ROLE_ORIGIN,
		Addresses: &ocmv1.NodeAddresses{Rtmp: "127.0.0.1:1935", Http: "127.0.0.1:8080"}}})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := o.KeepSession(ctx, &ocmv1.KeepSessionRequest{NodeId: "origin-a", LeaseId: reg.GetLeaseId()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sess.Recv(); err != nil {
		t.Fatalf("session: %v", err)
	}
	sessEnd := make(chan error, 1)
	go func() {
		for {
			if _, err := sess.Recv(); err != nil {
				sessEnd <- err
				return
			}
		}
	}()
	watchA := watch(a)

	// A replaced by B (from a file); the origin's token stays.
	reloadTo(fmt.Sprintf("    - {identity: \"edge:*\", tokenFile: %q}\n    - {identity: \"origin:*\", token: %s}\n", bFile, originO))
	waitLog(`"changed":["auth.tokens"]`, 1)
	if got := list(a); got != codes.Unauthenticated {
		t.Errorf("removed token A after the reload: %v, want Unauthenticated", got)
	}
	if got := list(b); got != codes.OK {
		t.Errorf("added token B after the reload: %v, want OK", got)
	}
	select {
	case err := <-watchA:
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("watch with the removed token ended with %v, want Unauthenticated", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("watch with the removed token still open 10s after the reload")
	}
	select {
	case err := <-sessEnd:
		t.Errorf("session with a token still listed ended: %v", err)
	default:
	}
	watchB := watch(b)

	// Refused reloads: a token file that does not exist, and an empty list
	// (no client certificates here: it would lock every node out). B stays.
	reloadTo(fmt.Sprintf("    - {identity: \"edge:*\", tokenFile: %q}\n", filepath.Join(dir, "missing.token")))
	waitLog("config reload refused; keeping the running configuration", 1)
	writeFile(t, cfg, base+"auth:\n  tokens: []\n")
	waitLog("config reload refused; keeping the running configuration", 2)
	if !strings.Contains(ocm.Output(), "lock every node out") {
		t.Error("the empty list was not refused for locking every node out")
	}
	if got := list(b); got != codes.OK {
		t.Errorf("token B after refused reloads: %v, want OK", got)
	}
	if got := list(a); got != codes.Unauthenticated {
		t.Errorf("token A after refused reloads: %v, want Unauthenticated", got)
	}
	select {
	case err := <-watchB:
		t.Errorf("watch with token B ended by a refused reload: %v", err)
	case err := <-sessEnd:
		t.Errorf("session ended by a refused reload: %v", err)
	case <-time.After(time.Second):
	}
	if code := ocm.Stop(15 * time.Second); code != 0 {
		t.Fatalf("ocm exit code %d after SIGTERM", code)
	}
}
