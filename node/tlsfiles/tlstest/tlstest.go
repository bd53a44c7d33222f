// Package tlstest issues real certificates for tests (crypto/x509, ECDSA
// P-256): a CA, server certificates for hosts and IPs, and client
// certificates carrying a livecluster identity (authn conventions), written
// as PEM files the way a mounted Secret holds them.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a test certificate authority.
type CA struct {
	Cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	CertPEM []byte
	serial  int64
}

// NewCA makes a self-signed CA named name.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: c, key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), serial: 1}
}

// Leaf describes a certificate to issue.
type Leaf struct {
	CommonName string
	// URIs are URI SANs, e.g. "livecluster://origin/origin-a".
	URIs []string
	// Hosts are DNS names or IPs (server certificates).
	Hosts []string
	// Client makes a client-auth certificate, else server-auth.
	Client bool
	// NotAfter defaults to 24 h from now.
	NotAfter time.Time
}

// Pair is an issued certificate and key in PEM.
type Pair struct {
	Cert     *x509.Certificate
	CertPEM  []byte
	KeyPEM   []byte
	NotAfter time.Time
}

// Issue signs l.
func (ca *CA) Issue(t testing.TB, l Leaf) Pair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca.serial++
	if l.NotAfter.IsZero() {
		l.NotAfter = time.Now().Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial), Subject: pkix.Name{CommonName: l.CommonName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: l.NotAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if l.Client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	for _, u := range l.URIs {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	for _, h := range l.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return Pair{Cert: c, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), NotAfter: l.NotAfter}
}

// Files are the paths of a written pair and its CA.
type Files struct {
	Dir, Cert, Key, CA string
}

// Write writes tls.crt, tls.key and ca.crt into dir (created), the names
// of a cert-manager Secret, and returns their paths.
func (ca *CA) Write(t testing.TB, dir string, p Pair) Files {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	f := Files{Dir: dir, Cert: filepath.Join(dir, "tls.crt"), Key: filepath.Join(dir, "tls.key"), CA: filepath.Join(dir, "ca.crt")}
	for path, b := range map[string][]byte{f.Cert: p.CertPEM, f.Key: p.KeyPEM, f.CA: ca.CertPEM} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// SecretDir lays out dir as Kubernetes mounts a Secret: the visible files
// are symlinks through ..data to a timestamped directory. Each call
// switches ..data to a new directory holding p (and ca) by renaming a new
// symlink over it, as the kubelet does when cert-manager renews, and
// returns the visible paths.
func (ca *CA) SecretDir(t testing.TB, dir string, p Pair, gen int) Files {
	t.Helper()
	ts := filepath.Join(dir, "..gen"+time.Now().Format("150405.000000000")+"-"+string(rune('a'+gen%26)))
	inner := ca.Write(t, ts, p)
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	f := Files{Dir: dir}
	for _, x := range []struct {
		name string
		dst  *string
	}{{"tls.crt", &f.Cert}, {"tls.key", &f.Key}, {"ca.crt", &f.CA}} {
		*x.dst = filepath.Join(dir, x.name)
		if _, err := os.Lstat(*x.dst); err != nil {
			if err := os.Symlink(filepath.Join("..data", x.name), *x.dst); err != nil {
				t.Fatal(err)
			}
		}
	}
	_ = inner
	return f
}
