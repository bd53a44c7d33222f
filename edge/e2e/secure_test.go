package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/livecluster/livecluster/node/authn"
	"github.com/livecluster/livecluster/node/config"
	"github.com/livecluster/livecluster/node/proctest"
	"github.com/livecluster/livecluster/node/tlsfiles"
	"github.com/livecluster/livecluster/node/tlsfiles/tlstest"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

const (
	secEdgeToken  = "edge-role-token-0123456789abcdef"
	secAdminToken = "admin-token-0123456789abcdef"
)

// TestSecureCluster runs the ocm, an origin and an edge with the control
// plane secured: the origin authenticates to the OCM with a client
// certificate (mTLS), the edge with the edge role token, players use
// HTTPS. A stream flows end to end; forged calls for the origin's id are
// refused with the right code and its ownership is unchanged; grpcurl
// works with the admin token; certificates rotated on disk (a Secret's
// ..data symlink swap) are served without a restart; the edge's admin
// port is HTTPS with a token, and its drain subcommand uses both.
func TestSecureCluster(t *testing.T) {
	t.Parallel()
	skipShort(t)
	ffmpeg := proctest.Tool(t, "LIVECLUSTER_FFMPEG", "ffmpeg")
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "livecluster-test-ca")
	local := []string{"127.0.0.1", "localhost"}
	ocmTLS := ca.SecretDir(t, filepath.Join(dir, "ocm-tls"), ca.Issue(t, tlstest.Leaf{CommonName: "ocm", Hosts: local}), 1)
	originTLS := ca.Write(t, filepath.Join(dir, "origin-tls"), ca.Issue(t, tlstest.Leaf{
		URIs: []string{"livecluster://origin/origin-s1"}, Client: true}))
	httpsDir := filepath.Join(dir, "https-tls")
	httpsTLS := ca.SecretDir(t, httpsDir, ca.Issue(t, tlstest.Leaf{CommonName: "play", Hosts: local}), 1)
	edgeTok := writeFile(t, filepath.Join(dir, "edge.token"), secEdgeToken+"\n")
	adminTok := writeFile(t, filepath.Join(dir, "admin.token"), secAdminToken+"\n")

	// The OCM: mTLS for nodes, the edge role token, an admin token.
	ocmAddr, ocmAdmin := proctest.FreeAddr(t), proctest.FreeAddr(t)
	ocmCfg := writeFile(t, filepath.Join(dir, "ocm.yaml"), fmt.Sprintf(`
grpc:
  tls:
    certFile: %s
    keyFile: %s
    clientCAFile: %s
auth:
  tokens:
    - identity: "edge:*"
      tokenFile: %s
    - identity: admin
      tokenFile: %s
etcd:
  clientURL: http://%s
  peerURL: http://%s
shutdown:
  startWait: 0s
  finalWait: 0s
`, ocmTLS.Cert, ocmTLS.Key, ocmTLS.CA, edgeTok, adminTok, proctest.FreeAddr(t), proctest.FreeAddr(t)))
	ocm := proctest.Start(t, "ocm", bins.ocm, "--config", ocmCfg, "--node-id", "ocm-0",
		"--grpc-listen", ocmAddr, "--admin-listen", ocmAdmin, "--data-dir", filepath.Join(dir, "etcd"))
	proctest.WaitHTTP(t, "http://"+ocmAdmin+"/readyz", 200, 30*time.Second)

	// The origin: its client certificate names origin-s1.
	org := &node{id: "origin-s1", rtmp: proctest.FreeAddr(t), http: proctest.FreeAddr(t), admin: proctest.FreeAddr(t)}
	originHTTPS := proctest.FreeAddr(t)
	originCfg := writeFile(t, filepath.Join(dir, "origin.yaml"), fmt.Sprintf(`
ocm:
  tls:
    caFile: %s
    certFile: %s
    keyFile: %s
https:
  listen: %s
  certFile: %s
  keyFile: %s
admin:
  tokenFile: %s
shutdown:
  startWait: 100ms
  finalWait: 0s
`, ocmTLS.CA, originTLS.Cert, originTLS.Key, originHTTPS, httpsTLS.Cert, httpsTLS.Key, adminTok))
	org.Proc = proctest.Start(t, org.id, bins.origin, "--config", originCfg, "--node-id", org.id, "--ocm", ocmAddr,
		"--rtmp-listen", org.rtmp, "--http-listen", org.http, "--admin-listen", org.admin,
		"--advertise-host", "127.0.0.1", "--hls-dir", filepath.Join(dir, "hls"))
	proctest.WaitHTTP(t, "http://"+org.admin+"/readyz", 200, 30*time.Second)

	// The edge: the role token, HTTPS for players, an HTTPS admin port.
	edg := &node{id: "edge-s1", rtmp: proctest.FreeAddr(t), http: proctest.FreeAddr(t), admin: proctest.FreeAddr(t)}
	edgeHTTPS := proctest.FreeAddr(t)
	edgeCfg := writeFile(t, filepath.Join(dir, "edge.yaml"), fmt.Sprintf(`
adminListen: %s
ocm:
  tls:
    caFile: %s
  tokenFile: %s
https:
  listen: %s
  certFile: %s
  keyFile: %s
admin:
  tls:
    certFile: %s
    keyFile: %s
  tokenFile: %s
edge:
  waitTimeout: 5s
shutdown:
  startWait: 100ms
  drainTimeout: 2s
  finalWait: 0s
`, edg.admin, ocmTLS.CA, edgeTok, edgeHTTPS, httpsTLS.Cert, httpsTLS.Key, httpsTLS.Cert, httpsTLS.Key, adminTok))
	edg.Proc = proctest.Start(t, edg.id, bins.edge, "--config", edgeCfg, "--node-id", edg.id, "--ocm", ocmAddr,
		"--rtmp-listen", edg.rtmp, "--http-listen", edg.http, "--advertise-host", "127.0.0.1")
	waitFor(t, "the edge's healthcheck over HTTPS", 30*time.Second, func() bool {
		return exec.Command(bins.edge, "healthcheck", "--config", edgeCfg).Run() == nil
	})

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	clientTLS := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}

	// A stream published at the origin plays from the edge over HTTPS.
	flv := proctest.MakeTestFLV(t, ffmpeg, dir, 10, 30)
	proctest.Start(t, "publisher", ffmpeg, "-nostdin", "-v", "error", "-re", "-stream_loop", "-1",
		"-i", flv, "-c", "copy", "-f", "flv", "rtmp://"+org.rtmp+"/live/sec")
	admin := dialOCM(t, ocmAddr, ocmTLS.CA, secAdminToken)
	var epoch int64
	waitFor(t, "origin-s1 owns live/sec", 20*time.Second, func() bool {
		r, err := admin.LookupStream(context.Background(), &ocmv1.LookupStreamRequest{Key: &ocmv1.StreamKey{App: "live", Name: "sec"}})
		epoch = r.GetStream().GetEpoch()
		return err == nil && r.GetStream().GetOwnerNodeId() == "origin-s1"
	})
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}, Timeout: 10 * time.Second}
	resp, err := hc.Get("https://" + edgeHTTPS + "/live/sec.flv")
	if err != nil {
		t.Fatalf("HTTP-FLV over HTTPS from the edge: %v", err)
	}
	head := make([]byte, 3)
	_, err = io.ReadFull(resp.Body, head)
	resp.Body.Close()
	if err != nil || string(head) != "FLV" || resp.StatusCode != 200 {
		t.Fatalf("HTTPS FLV from the edge: %d %q %v", resp.StatusCode, head, err)
	}

	// Forged calls for origin-s1: with the edge's token, and with nothing.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	asEdge := dialOCM(t, ocmAddr, ocmTLS.CA, secEdgeToken)
	anon := dialOCM(t, ocmAddr, ocmTLS.CA, "")
	key := &ocmv1.StreamKey{App: "live", Name: "sec"}
	_, err = asEdge.Register(ctx, &ocmv1.RegisterRequest{Node: &ocmv1.Node{Id: "origin-s1", Role: ocmv1.NodeRole_NODE_ROLE_ORIGIN,
		Addresses: &ocmv1.NodeAddresses{Rtmp: "10.0.0.1:1935", Http: "10.0.0.1:8080"}}})
	wantStatus(t, err, codes.PermissionDenied, "edge token registers as origin-s1")
	_, err = asEdge.TransferStream(ctx, &ocmv1.TransferStreamRequest{NodeId: "origin-s1", Key: key, Epoch: epoch, ToNodeId: "edge-s1"})
	wantStatus(t, err, codes.PermissionDenied, "edge token transfers origin-s1's stream")
	_, err = asEdge.ClaimStream(ctx, &ocmv1.ClaimStreamRequest{NodeId: "edge-s1", Key: &ocmv1.StreamKey{App: "live", Name: "other"}})
	wantStatus(t, err, codes.PermissionDenied, "an edge claims")
	_, err = anon.TransferStream(ctx, &ocmv1.TransferStreamRequest{NodeId: "origin-s1", Key: key, Epoch: epoch, ToNodeId: "origin-s1"})
	wantStatus(t, err, codes.Unauthenticated, "anonymous transfer")
	_, err = anon.Register(ctx, &ocmv1.RegisterRequest{Node: &ocmv1.Node{Id: "origin-s1", Role: ocmv1.NodeRole_NODE_ROLE_ORIGIN}})
	wantStatus(t, err, codes.Unauthenticated, "anonymous register")
	r, err := admin.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: key})
	if err != nil || r.GetStream().GetOwnerNodeId() != "origin-s1" || r.GetStream().GetEpoch() != epoch ||
		r.GetOwner().GetAddresses().GetRtmp() != org.rtmp {
		t.Fatalf("after forged calls: %v %v; want origin-s1 at epoch %d, rtmp %s", r, err, epoch, org.rtmp)
	}

	// grpcurl, as docs/ocm.md shows it, with the admin token.
	grpcurl := os.Getenv("LIVECLUSTER_GRPCURL")
	if grpcurl == "" {
		grpcurl, _ = exec.LookPath("grpcurl")
	}
	if grpcurl == "" {
		t.Log("grpcurl not found (LIVECLUSTER_GRPCURL, PATH): its part is skipped")
	} else {
		out, err := exec.Command(grpcurl, "-cacert", ocmTLS.CA, "-H", "authorization: Bearer "+secAdminToken,
			"-d", `{"role":"NODE_ROLE_ORIGIN"}`, ocmAddr, "livecluster.ocm.v1.OCMService/ListNodes").CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"id": "origin-s1"`) {
			t.Errorf("grpcurl with the admin token: %v\n%s", err, out)
		}
		out, _ = exec.Command(grpcurl, "-cacert", ocmTLS.CA, "-d", `{"key":{"app":"live","name":"sec"}}`,
			ocmAddr, "livecluster.ocm.v1.OCMService/LookupStream").CombinedOutput()
		if !strings.Contains(string(out), "Code: Unauthenticated") {
			t.Errorf("grpcurl without a token:\n%s", out)
		}
	}

	// Rotation: new certificates behind the same paths (a ..data swap),
	// served to new connections without a restart.
	newHTTPS := ca.Issue(t, tlstest.Leaf{CommonName: "play-rotated", Hosts: local})
	ca.SecretDir(t, httpsDir, newHTTPS, 2)
	newOCM := ca.Issue(t, tlstest.Leaf{CommonName: "ocm-rotated", Hosts: local})
	ca.SecretDir(t, filepath.Join(dir, "ocm-tls"), newOCM, 2)
	served := func(addr string) string {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", NextProtos: []string{"h2", "http/1.1"}})
		if err != nil {
			return err.Error()
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	for _, x := range []struct{ addr, want string }{
		{originHTTPS, "play-rotated"}, {edgeHTTPS, "play-rotated"}, {edg.admin, "play-rotated"}, {ocmAddr, "ocm-rotated"},
	} {
		waitFor(t, x.addr+" serves "+x.want, 3*tlsfiles.DefaultInterval, func() bool { return served(x.addr) == x.want })
	}
	// The nodes keep working through the OCM on its new certificate.
	if _, err := dialOCM(t, ocmAddr, ocmTLS.CA, secEdgeToken).ListNodes(ctx, &ocmv1.ListNodesRequest{}); err != nil {
		t.Errorf("after the OCM's rotation: %v", err)
	}
	for _, p := range []*proctest.Proc{ocm, org.Proc, edg.Proc} {
		if strings.Contains(p.Output(), "do not load") {
			t.Errorf("a rotation was refused:\n%s", p.Output())
		}
	}

	// The origin's client kick needs the admin token on its HTTP API.
	req, _ := http.NewRequest(http.MethodDelete, "http://"+org.http+"/api/v1/clients/1", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("kick without a token on the origin's HTTP API: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// The edge's drain subcommand finds the HTTPS admin port and the token.
	out, err := exec.Command(bins.edge, "drain", "--config", edgeCfg, "--timeout", "20s").CombinedOutput()
	if err != nil {
		t.Fatalf("edge drain: %v\n%s", err, out)
	}
	if code := edg.Wait(10 * time.Second); code != 0 {
		t.Errorf("edge exit code %d", code)
	}
	if !bytes.Contains([]byte(org.Output()), []byte("registered with the OCM")) {
		t.Errorf("origin never registered over mTLS:\n%s", org.Output())
	}
}

// dialOCM connects over TLS (trusting caFile) with a bearer token when tok
// is not empty.
func dialOCM(t *testing.T, addr, caFile, tok string) ocmv1.OCMServiceClient {
	t.Helper()
	st, err := tlsfiles.New(tlsfiles.Options{Name: "test client", CAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(st.ClientConfig("")))}
	if tok != "" {
		tk, err := authn.NewToken("test", config.Token{Token: tok}, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, grpc.WithPerRPCCredentials(authn.PerRPC(tk, true)))
	}
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return ocmv1.NewOCMServiceClient(cc)
}

func wantStatus(t *testing.T, err error, want codes.Code, what string) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Errorf("%s: %v (%v), want %v", what, got, err, want)
	}
}
