package tlsfiles_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livecluster/livecluster/node/tlsfiles"
	"github.com/livecluster/livecluster/node/tlsfiles/tlstest"
)

// serve accepts TLS connections with cfg until the test ends; each
// connection finishes its handshake and is closed.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = c.(*tls.Conn).Handshake()
				_, _ = c.Write([]byte{1})
				c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

// handshake dials addr and returns the server's leaf certificate.
func handshake(addr string, cfg *tls.Config) (*x509.Certificate, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	// A refused client certificate shows on the first read (TLS 1.3).
	if _, err := c.Read(make([]byte, 1)); err != nil {
		return nil, err
	}
	return c.ConnectionState().PeerCertificates[0], nil
}

func TestRotationBySymlinkSwap(t *testing.T) {
	ca := tlstest.NewCA(t, "test-ca")
	dir := t.TempDir()
	p1 := ca.Issue(t, tlstest.Leaf{CommonName: "one", Hosts: []string{"127.0.0.1"}})
	f := ca.SecretDir(t, dir, p1, 1)
	srv, err := tlsfiles.New(tlsfiles.Options{Name: "test", CertFile: f.Cert, KeyFile: f.Key, Interval: -1})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := tlsfiles.New(tlsfiles.Options{Name: "client", CAFile: f.CA, Interval: -1})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, srv.ServerConfig())
	leaf, err := handshake(addr, cli.ClientConfig(""))
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Subject.CommonName != "one" {
		t.Fatalf("served %q, want one", leaf.Subject.CommonName)
	}
	p2 := ca.Issue(t, tlstest.Leaf{CommonName: "two", Hosts: []string{"127.0.0.1"}})
	ca.SecretDir(t, dir, p2, 2)
	leaf, err = handshake(addr, cli.ClientConfig(""))
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Subject.CommonName != "two" {
		t.Fatalf("after the swap served %q, want two", leaf.Subject.CommonName)
	}
	if got := srv.NotAfter(); !got.Equal(p2.Cert.NotAfter) {
		t.Errorf("NotAfter %v, want %v", got, p2.Cert.NotAfter)
	}
}

func TestBadNewFilesKeepOldCertificate(t *testing.T) {
	ca := tlstest.NewCA(t, "test-ca")
	p1 := ca.Issue(t, tlstest.Leaf{CommonName: "one", Hosts: []string{"127.0.0.1"}})
	f := ca.Write(t, t.TempDir(), p1)
	srv, err := tlsfiles.New(tlsfiles.Options{Name: "test", CertFile: f.Cert, KeyFile: f.Key, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := tlsfiles.New(tlsfiles.Options{Name: "client", CAFile: f.CA, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, srv.ServerConfig())

	// Half a rotation: the new certificate, the old key.
	p2 := ca.Issue(t, tlstest.Leaf{CommonName: "two", Hosts: []string{"127.0.0.1"}})
	if err := os.WriteFile(f.Cert, p2.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	// Within the interval nothing is re-read.
	if leaf, err := handshake(addr, cli.ClientConfig("")); err != nil || leaf.Subject.CommonName != "one" {
		t.Fatalf("within the interval: %v, %v", leaf, err)
	}
	if err := srv.Reload(); err == nil || !strings.Contains(err.Error(), "private key does not match") {
		t.Fatalf("Reload of a mismatched pair: %v", err)
	}
	if leaf, err := handshake(addr, cli.ClientConfig("")); err != nil || leaf.Subject.CommonName != "one" {
		t.Fatalf("after a bad reload: %v, %v; want the old certificate", leaf, err)
	}
	// A truncated PEM, then a missing file: still the old one.
	if err := os.WriteFile(f.Key, p2.KeyPEM[:40], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := srv.Reload(); err == nil {
		t.Fatal("Reload of a truncated key: no error")
	}
	if err := os.Remove(f.Key); err != nil {
		t.Fatal(err)
	}
	if err := srv.Reload(); err == nil {
		t.Fatal("Reload of a missing key: no error")
	}
	if leaf, err := handshake(addr, cli.ClientConfig("")); err != nil || leaf.Subject.CommonName != "one" {
		t.Fatalf("after bad reloads: %v, %v", leaf, err)
	}
	// The rotation completes.
	if err := os.WriteFile(f.Key, p2.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if leaf, err := handshake(addr, cli.ClientConfig("")); err != nil || leaf.Subject.CommonName != "two" {
		t.Fatalf("after the good reload: %v, %v", leaf, err)
	}
}

func TestClientCertificates(t *testing.T) {
	ca := tlstest.NewCA(t, "test-ca")
	other := tlstest.NewCA(t, "other-ca")
	dir := t.TempDir()
	sf := ca.Write(t, filepath.Join(dir, "srv"), ca.Issue(t, tlstest.Leaf{CommonName: "srv", Hosts: []string{"127.0.0.1"}}))
	srv, err := tlsfiles.New(tlsfiles.Options{Name: "srv", CertFile: sf.Cert, KeyFile: sf.Key, CAFile: sf.CA, Interval: -1})
	if err != nil {
		t.Fatal(err)
	}
	var peers = make(chan int, 10)
	cfg := srv.ServerConfig()
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		err := verify(cs)
		if err == nil {
			peers <- len(cs.PeerCertificates)
		}
		return err
	}
	addr := serve(t, cfg)

	good := ca.Write(t, filepath.Join(dir, "good"), ca.Issue(t, tlstest.Leaf{CommonName: "origin:a", Client: true}))
	c, err := tlsfiles.New(tlsfiles.Options{Name: "good", CertFile: good.Cert, KeyFile: good.Key, CAFile: sf.CA})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(addr, c.ClientConfig("")); err != nil {
		t.Fatalf("a client certificate of the CA: %v", err)
	}
	if n := <-peers; n != 1 {
		t.Errorf("server saw %d peer certificates", n)
	}

	bad := other.Write(t, filepath.Join(dir, "bad"), other.Issue(t, tlstest.Leaf{CommonName: "origin:a", Client: true}))
	c, err = tlsfiles.New(tlsfiles.Options{Name: "bad", CertFile: bad.Cert, KeyFile: bad.Key, CAFile: sf.CA})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(addr, c.ClientConfig("")); err == nil {
		t.Fatal("a client certificate of another CA was accepted")
	}

	// A server certificate is not a client certificate.
	srvAsClient, err := tlsfiles.New(tlsfiles.Options{Name: "srv-as-client", CertFile: sf.Cert, KeyFile: sf.Key, CAFile: sf.CA})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(addr, srvAsClient.ClientConfig("")); err == nil {
		t.Fatal("a server-auth certificate was accepted as a client certificate")
	}

	// No certificate: the handshake succeeds; the listener decides.
	anon, err := tlsfiles.New(tlsfiles.Options{Name: "anon", CAFile: sf.CA})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(addr, anon.ClientConfig("")); err != nil {
		t.Fatalf("no client certificate: %v", err)
	}
	if n := <-peers; n != 0 {
		t.Errorf("server saw %d peer certificates, want 0", n)
	}

	// The client checks the server's name and CA.
	if _, err := handshake(addr, anon.ClientConfig("ocm.example")); err == nil {
		t.Fatal("a server certificate without the name dialled was accepted")
	}
	strangers, err := tlsfiles.New(tlsfiles.Options{Name: "strangers", CAFile: bad.CA})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(addr, strangers.ClientConfig("")); err == nil {
		t.Fatal("a server certificate of an untrusted CA was accepted")
	}
}

func TestNewRefusesBadFiles(t *testing.T) {
	ca := tlstest.NewCA(t, "test-ca")
	f := ca.Write(t, t.TempDir(), ca.Issue(t, tlstest.Leaf{CommonName: "x"}))
	for name, o := range map[string]tlsfiles.Options{
		"missing cert": {CertFile: f.Cert + ".nope", KeyFile: f.Key},
		"key as cert":  {CertFile: f.Key, KeyFile: f.Key},
		"ca not pem":   {CAFile: f.Key},
		"cert no key":  {CertFile: f.Cert},
		"nothing":      {},
	} {
		if _, err := tlsfiles.New(o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
