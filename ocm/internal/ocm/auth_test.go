package ocm_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/livecluster/livecluster/node/authn"
	"github.com/livecluster/livecluster/node/config"
	"github.com/livecluster/livecluster/node/ocmclient"
	"github.com/livecluster/livecluster/node/tlsfiles"
	"github.com/livecluster/livecluster/node/tlsfiles/tlstest"
	"github.com/livecluster/livecluster/ocm/internal/ocm"
	"github.com/livecluster/livecluster/ocm/internal/server"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

const edgeToken = "edge-role-token-0123456789"

// secured is an OCM replica serving TLS with client certificates and an
// edge role token, and a way to dial it as anyone.
type secured struct {
	*replica
	ca   *tlstest.CA
	dir  string
	addr string
}

func startSecured(t *testing.T, openReads bool) *secured {
	t.Helper()
	ca := tlstest.NewCA(t, "cluster-ca")
	dir := t.TempDir()
	sf := ca.Write(t, filepath.Join(dir, "ocm"), ca.Issue(t, tlstest.Leaf{CommonName: "ocm", Hosts: []string{"127.0.0.1"}}))
	st, err := tlsfiles.New(tlsfiles.Options{Name: "ocm grpc", CertFile: sf.Cert, KeyFile: sf.Key, CAFile: sf.CA})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := authn.NewToken("edge", config.Token{Token: edgeToken}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	auth := &server.Auth{MTLS: true, OpenReads: openReads,
		Tokens: []server.TokenIdentity{{Identity: authn.Identity{Role: authn.RoleEdge, Node: authn.AnyNode}, Token: tok}}}
	r := startReplica(t, shared.Endpoints(), newPrefix(t), 10*time.Second, func(c *ocm.Config) {
		c.TLS, c.Auth = st.ServerConfig(), auth
	})
	return &secured{replica: r, ca: ca, dir: dir, addr: r.Addr().String()}
}

// dial connects with a client certificate of identity cn (from ca; the
// cluster's CA when nil; none when cn is ""), and a bearer token when tok
// is not "".
func (s *secured) dial(t *testing.T, ca *tlstest.CA, cn, tok string) ocmv1.OCMServiceClient {
	t.Helper()
	if ca == nil {
		ca = s.ca
	}
	o := tlsfiles.Options{Name: "client " + cn, CAFile: filepath.Join(s.dir, "ocm", "ca.crt")}
	if cn != "" {
		f := ca.Write(t, filepath.Join(t.TempDir(), "c"), ca.Issue(t, tlstest.Leaf{CommonName: cn, Client: true}))
		o.CertFile, o.KeyFile = f.Cert, f.Key
	}
	st, err := tlsfiles.New(o)
	if err != nil {
		t.Fatal(err)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(st.ClientConfig("")))}
	if tok != "" {
		tk, err := authn.NewToken("t", config.Token{Token: tok}, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, grpc.WithPerRPCCredentials(authn.PerRPC(tk, true)))
	}
	cc, err := grpc.NewClient(s.addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return ocmv1.NewOCMServiceClient(cc)
}

func regNode(id string, role ocmv1.NodeRole) *ocmv1.RegisterRequest {
	return &ocmv1.RegisterRequest{Node: &ocmv1.Node{Id: id, Role: role,
		Addresses: &ocmv1.NodeAddresses{Rtmp: id + ":1935", Http: id + ":8080"}}}
}

// TestAuthDecisions: every write acts only for the caller's own node id,
// only origins claim, no credentials means UNAUTHENTICATED, and a refused
// call changes nothing.
func TestAuthDecisions(t *testing.T) {
	s := startSecured(t, false)
	ctx := ctxT(t, 60*time.Second)
	a := s.dial(t, nil, "origin:origin-a", "")
	b := s.dial(t, nil, "origin:origin-b", "")
	anon := s.dial(t, nil, "", "")
	edge := s.dial(t, nil, "", edgeToken)
	stranger := s.dial(t, tlstest.NewCA(t, "other-ca"), "origin:origin-a", "")
	admin := s.dial(t, nil, "admin", "")

	ra, err := a.Register(ctx, regNode("origin-a", ocmv1.NodeRole_NODE_ROLE_ORIGIN))
	if err != nil {
		t.Fatal(err)
	}
	sa := session{id: "origin-a", lease: ra.LeaseId}
	st, err := claim(ctx, a, sa, key("s1"))
	if err != nil {
		t.Fatal(err)
	}
	rb, err := b.Register(ctx, regNode("origin-b", ocmv1.NodeRole_NODE_ROLE_ORIGIN))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := edge.Register(ctx, regNode("edge-1", ocmv1.NodeRole_NODE_ROLE_EDGE)); err != nil {
		t.Fatalf("edge with the role token: %v", err)
	}

	// Forged calls: B with A's id (and A's lease, public enough), the edge
	// as an origin, nobody at all.
	forged := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"B registers as A", func() error {
			_, err := b.Register(ctx, regNode("origin-a", ocmv1.NodeRole_NODE_ROLE_ORIGIN))
			return err
		}, codes.PermissionDenied},
		{"B claims for A", func() error {
			_, err := b.ClaimStream(ctx, &ocmv1.ClaimStreamRequest{NodeId: "origin-a", LeaseId: ra.LeaseId, Key: key("s2")})
			return err
		}, codes.PermissionDenied},
		{"B transfers as A", func() error {
			_, err := b.TransferStream(ctx, &ocmv1.TransferStreamRequest{NodeId: "origin-a", LeaseId: ra.LeaseId, Key: key("s1"),
				Epoch: st.Epoch, ToNodeId: "origin-b"})
			return err
		}, codes.PermissionDenied},
		{"B releases A's stream", func() error {
			_, err := b.ReleaseStream(ctx, &ocmv1.ReleaseStreamRequest{NodeId: "origin-a", LeaseId: ra.LeaseId, Key: key("s1"), Epoch: st.Epoch})
			return err
		}, codes.PermissionDenied},
		{"B heartbeats for A", func() error {
			_, err := b.Heartbeat(ctx, &ocmv1.HeartbeatRequest{NodeId: "origin-a", LeaseId: ra.LeaseId})
			return err
		}, codes.PermissionDenied},
		{"B drains A", func() error {
			_, err := b.Drain(ctx, &ocmv1.DrainRequest{NodeId: "origin-a", LeaseId: ra.LeaseId})
			return err
		}, codes.PermissionDenied},
		{"B deregisters A", func() error {
			_, err := b.Deregister(ctx, &ocmv1.DeregisterRequest{NodeId: "origin-a", LeaseId: ra.LeaseId})
			return err
		}, codes.PermissionDenied},
		{"B keeps A's session", func() error {
			ks, err := b.KeepSession(ctx, &ocmv1.KeepSessionRequest{NodeId: "origin-a", LeaseId: ra.LeaseId})
			if err != nil {
				return err
			}
			_, err = ks.Recv()
			return err
		}, codes.PermissionDenied},
		{"edge registers as an origin", func() error {
			_, err := edge.Register(ctx, regNode("origin-c", ocmv1.NodeRole_NODE_ROLE_ORIGIN))
			return err
		}, codes.PermissionDenied},
		{"edge claims for itself", func() error {
			_, err := edge.ClaimStream(ctx, &ocmv1.ClaimStreamRequest{NodeId: "edge-1", LeaseId: 1, Key: key("s3")})
			return err
		}, codes.PermissionDenied},
		{"edge drains an origin", func() error {
			_, err := edge.Drain(ctx, &ocmv1.DrainRequest{NodeId: "origin-a", LeaseId: ra.LeaseId})
			return err
		}, codes.PermissionDenied},
		{"anonymous register", func() error {
			_, err := anon.Register(ctx, regNode("origin-z", ocmv1.NodeRole_NODE_ROLE_ORIGIN))
			return err
		}, codes.Unauthenticated},
		{"anonymous transfer", func() error {
			_, err := anon.TransferStream(ctx, &ocmv1.TransferStreamRequest{NodeId: "origin-a", LeaseId: ra.LeaseId, Key: key("s1"),
				Epoch: st.Epoch, ToNodeId: "origin-b"})
			return err
		}, codes.Unauthenticated},
		{"anonymous lookup (reads need credentials)", func() error {
			_, err := anon.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: key("s1")})
			return err
		}, codes.Unauthenticated},
		{"anonymous watch", func() error {
			w, err := anon.WatchStreams(ctx, &ocmv1.WatchStreamsRequest{InitialState: true})
			if err != nil {
				return err
			}
			_, err = w.Recv()
			return err
		}, codes.Unauthenticated},
		{"a wrong token", func() error {
			_, err := s.dial(t, nil, "", "wrong-token-0123456789").Register(ctx, regNode("edge-2", ocmv1.NodeRole_NODE_ROLE_EDGE))
			return err
		}, codes.Unauthenticated},
		{"a certificate without an identity", func() error {
			_, err := s.dial(t, nil, "origin-a.example", "").Register(ctx, regNode("origin-a", ocmv1.NodeRole_NODE_ROLE_ORIGIN))
			return err
		}, codes.Unauthenticated},
		{"a certificate of another CA", func() error {
			_, err := stranger.Register(ctx, regNode("origin-a", ocmv1.NodeRole_NODE_ROLE_ORIGIN))
			return err
		}, codes.Unavailable}, // the handshake fails
	}
	for _, f := range forged {
		wantCode(t, f.call(), f.want, f.name)
	}

	// Nothing changed: A still owns s1 at the same epoch, its session lives.
	lk, err := a.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: key("s1")})
	if err != nil {
		t.Fatal(err)
	}
	if lk.Stream.OwnerNodeId != "origin-a" || lk.Stream.Epoch != st.Epoch {
		t.Fatalf("after forged calls: owner %s epoch %d, want origin-a %d", lk.Stream.OwnerNodeId, lk.Stream.Epoch, st.Epoch)
	}
	if _, err := a.Heartbeat(ctx, &ocmv1.HeartbeatRequest{NodeId: "origin-a", LeaseId: ra.LeaseId}); err != nil {
		t.Fatalf("A's own heartbeat: %v", err)
	}
	for _, n := range []string{"s2", "s3"} {
		_, err := a.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: key(n)})
		wantCode(t, err, codes.NotFound, "forged claim of "+n)
	}
	nodes, err := edge.ListNodes(ctx, &ocmv1.ListNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Nodes {
		if n.Id == "origin-a" && n.State != ocmv1.NodeState_NODE_STATE_READY {
			t.Errorf("origin-a is %s after a forged drain", n.State)
		}
		if n.Id == "origin-c" || n.Id == "origin-z" {
			t.Errorf("forged registration of %s went through", n.Id)
		}
	}

	// What each may do: the edge reads, B acts for itself, an admin acts
	// for anyone.
	if _, err := edge.AssignOrigin(ctx, &ocmv1.AssignOriginRequest{Key: key("s9")}); err != nil {
		t.Errorf("edge AssignOrigin: %v", err)
	}
	if _, err := b.Drain(ctx, &ocmv1.DrainRequest{NodeId: "origin-b", LeaseId: rb.LeaseId}); err != nil {
		t.Errorf("B drains itself: %v", err)
	}
	if _, err := admin.Deregister(ctx, &ocmv1.DeregisterRequest{NodeId: "origin-b", LeaseId: rb.LeaseId}); err != nil {
		t.Errorf("admin deregisters B: %v", err)
	}

	// Health needs no credentials (probes, `ocm healthcheck --grpc`).
	cc, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(credentials.NewTLS(mustClientTLS(t, s))))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health without credentials: %v", err)
	}
	// Plaintext to a TLS port does not get through at all.
	pc, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = ocmv1.NewOCMServiceClient(pc).LookupStream(short, &ocmv1.LookupStreamRequest{Key: key("s1")})
	if err == nil {
		t.Error("plaintext call to the TLS port succeeded")
	}
}

func mustClientTLS(t *testing.T, s *secured) *tls.Config {
	st, err := tlsfiles.New(tlsfiles.Options{Name: "health", CAFile: filepath.Join(s.dir, "ocm", "ca.crt")})
	if err != nil {
		t.Fatal(err)
	}
	return st.ClientConfig("")
}

// TestAuthOpenReads: with auth.openReads, reads need no credentials and
// writes still do.
func TestAuthOpenReads(t *testing.T) {
	s := startSecured(t, true)
	ctx := ctxT(t, 30*time.Second)
	anon := s.dial(t, nil, "", "")
	_, err := anon.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: key("s1")})
	wantCode(t, err, codes.NotFound, "anonymous lookup with openReads")
	if _, err := anon.ListNodes(ctx, &ocmv1.ListNodesRequest{}); err != nil {
		t.Errorf("anonymous ListNodes with openReads: %v", err)
	}
	_, err = anon.Register(ctx, regNode("origin-z", ocmv1.NodeRole_NODE_ROLE_ORIGIN))
	wantCode(t, err, codes.Unauthenticated, "anonymous register with openReads")
}

// TestSetTokens: replacing the token list applies to the next call and
// ends, UNAUTHENTICATED, the open streams whose token it removed, while
// the others go on; a list that would turn authentication on or off is
// refused and changes nothing. Real etcd, real gRPC over loopback.
func TestSetTokens(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	mk := func(name, v string) server.TokenIdentity {
		tok, err := authn.NewToken(name, config.Token{Token: v}, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		return server.TokenIdentity{Identity: authn.Identity{Role: authn.RoleEdge, Node: authn.AnyNode}, Token: tok}
	}
	const tokA, tokB, tokC = "edge-token-A-0123456789", "edge-token-B-0123456789", "edge-token-C-0123456789"
	r := startReplica(t, shared.Endpoints(), newPrefix(t), 10*time.Second, func(c *ocm.Config) {
		c.Auth = &server.Auth{Tokens: []server.TokenIdentity{mk("a", tokA), mk("c", tokC)}}
	})
	dial := func(tok string) ocmv1.OCMServiceClient {
		tk, err := authn.NewToken("t", config.Token{Token: tok}, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient(r.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(authn.PerRPC(tk, false)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		return ocmv1.NewOCMServiceClient(cc)
	}
	watch := func(c ocmv1.OCMServiceClient) <-chan error {
		ws, err := c.WatchStreams(ctx, &ocmv1.WatchStreamsRequest{InitialState: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ws.Recv(); err != nil {
			t.Fatalf("watch: %v", err)
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
	a, b, c := dial(tokA), dial(tokB), dial(tokC)
	endA, endC := watch(a), watch(c)
	if _, err := b.ListNodes(ctx, &ocmv1.ListNodesRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("token B before SetTokens: %v", err)
	}

	if _, err := r.Server().SetTokens(nil); err == nil {
		t.Error("an empty list accepted on a token-only replica")
	}
	ended, err := r.Server().SetTokens([]server.TokenIdentity{mk("b", tokB), mk("c", tokC)})
	if err != nil || ended != 1 {
		t.Fatalf("SetTokens: %d streams ended, %v; want 1, nil", ended, err)
	}
	if _, err := a.ListNodes(ctx, &ocmv1.ListNodesRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("removed token A: %v, want Unauthenticated", err)
	}
	if _, err := b.ListNodes(ctx, &ocmv1.ListNodesRequest{}); err != nil {
		t.Errorf("added token B: %v", err)
	}
	select {
	case err := <-endA:
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("watch with the removed token ended with %v, want Unauthenticated", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("watch with the removed token still open")
	}
	select {
	case err := <-endC:
		t.Errorf("watch with a kept token ended: %v", err)
	case <-time.After(500 * time.Millisecond):
	}

	open := startReplica(t, shared.Endpoints(), newPrefix(t), 10*time.Second)
	if _, err := open.Server().SetTokens([]server.TokenIdentity{mk("b", tokB)}); err == nil {
		t.Error("tokens accepted by a replica started without authentication")
	}
}

// TestTokenRotationKeepsSessions: a token rotation through SetTokens as
// docs/security.md describes it, with real nodes (node/ocmclient). Node A
// gets the new token in its file before the old one is removed: its
// session stream, opened with the old token, is ended and reopened with
// the new one within the session grace, so it keeps its lease. Node B
// still holds the old token: it is refused and loses its lease after the
// grace. This is why removing a token also ends the streams it opened.
func TestTokenRotationKeepsSessions(t *testing.T) {
	ctx := ctxT(t, 90*time.Second)
	const oldTok, newTok, adminTok = "origin-token-old-0123456789", "origin-token-new-0123456789", "admin-token-0123456789abc"
	mk := func(role authn.Role, v string) server.TokenIdentity {
		tok, err := authn.NewToken(string(role), config.Token{Token: v}, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		id := authn.Identity{Role: role, Node: authn.AnyNode}
		if role == authn.RoleAdmin {
			id.Node = ""
		}
		return server.TokenIdentity{Identity: id, Token: tok}
	}
	r := startReplica(t, shared.Endpoints(), newPrefix(t), 10*time.Second, func(c *ocm.Config) {
		c.Auth = &server.Auth{Tokens: []server.TokenIdentity{mk(authn.RoleOrigin, oldTok), mk(authn.RoleAdmin, adminTok)}}
	})
	dir := t.TempDir()
	node := func(id string) (*ocmclient.Client, string) {
		file := filepath.Join(dir, id+".token")
		if err := os.WriteFile(file, []byte(oldTok), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := ocmclient.New(ocmclient.Options{Address: r.Addr().String(),
			Node: &ocmv1.Node{Id: id, Role: ocmv1.NodeRole_NODE_ROLE_ORIGIN,
				Addresses: &ocmv1.NodeAddresses{Rtmp: id + ":1935", Http: id + ":8080"}},
			Security: config.OCMSecurity{Token: config.Token{TokenFile: file}}})
		if err != nil {
			t.Fatal(err)
		}
		nctx, cancel := context.WithCancel(ctx)
		c.Start(nctx)
		t.Cleanup(func() { cancel(); _ = c.Close() })
		return c, file
	}
	a, aFile := node("origin-a")
	b, _ := node("origin-b")
	for !a.Registered() || !b.Registered() {
		if ctx.Err() != nil {
			t.Fatal("nodes not registered")
		}
		time.Sleep(20 * time.Millisecond)
	}
	sa, _ := a.Session()

	// 1. Both tokens accepted. 2. A's file gets the new token; the client
	// re-reads it at most every authn.DefaultInterval, on use.
	if _, err := r.Server().SetTokens([]server.TokenIdentity{mk(authn.RoleOrigin, oldTok), mk(authn.RoleOrigin, newTok), mk(authn.RoleAdmin, adminTok)}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(aFile, []byte(newTok), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(authn.DefaultInterval + 2*time.Second) // A's heartbeats (every ~3 s at a 10 s TTL) carried the new token since
	// 3. The old token removed.
	ended, err := r.Server().SetTokens([]server.TokenIdentity{mk(authn.RoleOrigin, newTok), mk(authn.RoleAdmin, adminTok)})
	if err != nil {
		t.Fatal(err)
	}
	if ended < 2 {
		t.Errorf("%d streams ended; want at least both nodes' session streams", ended)
	}
	time.Sleep(r.Server().SessionGrace() + 2*time.Second)

	admin := func() ocmv1.OCMServiceClient {
		tk, _ := authn.NewToken("admin", config.Token{Token: adminTok}, 0, nil)
		cc, err := grpc.NewClient(r.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(authn.PerRPC(tk, false)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		return ocmv1.NewOCMServiceClient(cc)
	}()
	nodes, err := admin.ListNodes(ctx, &ocmv1.ListNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	leases := map[string]int64{}
	for _, n := range nodes.GetNodes() {
		leases[n.GetId()] = n.GetLeaseId()
	}
	if leases["origin-a"] != sa.LeaseID || a.Status().Registrations != 1 {
		t.Errorf("node A (new token): lease %d, registrations %d; want its first lease %d kept", leases["origin-a"], a.Status().Registrations, sa.LeaseID)
	}
	if _, ok := leases["origin-b"]; ok {
		t.Errorf("node B (old token) still registered %v after the grace", leases)
	}
}
