// Package tlsfiles serves TLS from certificate, key and CA files that are
// re-read when they change on disk, so that a certificate rotated by
// cert-manager (which swaps the ..data symlink of a mounted Secret: the
// files are never written in place) is used from the next handshake on,
// without a restart. Every node's TLS goes through it: the OCM's gRPC port
// (mTLS), the nodes' OCM client, the admin ports and the HTTPS listeners.
//
// The files are checked on demand, at a handshake, at most once per
// Options.Interval: their contents are hashed and only a change is parsed.
// No goroutine runs. A new set that does not load (a half-written rotation:
// the new certificate with the old key, a truncated PEM, a missing file) is
// logged once at error level and the previous certificate stays in use; the
// next change is tried again.
//
// Certificates and CAs are applied through GetCertificate,
// GetClientCertificate and VerifyConnection on a fixed tls.Config (never
// GetConfigForClient, which would drop the ALPN protocols gRPC and
// net/http set on the config they are given). A server Config with a CA
// requests a client certificate and verifies it in VerifyConnection: a
// connection it accepted has either no client certificate or one that
// chains to the CA current at the handshake.
package tlsfiles

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultInterval is how often, at most, the files are checked for a change.
const DefaultInterval = 5 * time.Second

// Options name the files of a Store.
type Options struct {
	// Name says what the files are for in logs ("ocm grpc", "admin").
	Name string
	// CertFile and KeyFile are a PEM certificate chain and its key; both or
	// neither (a client without a certificate).
	CertFile, KeyFile string
	// CAFile holds PEM CA certificates: for a server, the CAs of client
	// certificates (none: client certificates are not asked for); for a
	// client, the CAs of the server's certificate (none: system roots).
	CAFile string
	// Interval between checks of the files; 0: DefaultInterval; negative:
	// every handshake (tests).
	Interval time.Duration
	Logger   *slog.Logger
}

// material is one loaded set of files.
type material struct {
	cert     *tls.Certificate // nil: no certificate configured
	pool     *x509.CertPool   // nil: no CA file
	notAfter time.Time
}

// Store holds the current certificate and CA pool of one set of files.
type Store struct {
	o   Options
	log *slog.Logger
	cur atomic.Pointer[material]

	mu      sync.Mutex
	checked time.Time
	seen    [32]byte // hash of the contents last tried, good or bad
}

// New loads the files; it fails when they cannot be read or do not form a
// valid certificate (key matching, CA parsable), naming the file. Nothing
// to load (no file) is an error too: the caller decides whether TLS is on.
func New(o Options) (*Store, error) {
	if o.CertFile == "" && o.CAFile == "" {
		return nil, errors.New("tlsfiles: no certificate nor CA file")
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, errors.New("tlsfiles: give both a certificate and a key file, or neither")
	}
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{o: o, log: o.Logger.With("component", "tls", "tls", o.Name)}
	raw, sum, err := s.read()
	if err != nil {
		return nil, err
	}
	m, err := s.parse(raw)
	if err != nil {
		return nil, err
	}
	s.cur.Store(m)
	s.seen, s.checked = sum, time.Now()
	return s, nil
}

type files struct{ cert, key, ca []byte }

func (s *Store) read() (files, [32]byte, error) {
	var f files
	var err error
	rd := func(path string) []byte {
		if path == "" || err != nil {
			return nil
		}
		var b []byte
		b, err = os.ReadFile(path)
		if err != nil {
			err = fmt.Errorf("tls %s: read: %w", s.o.Name, err)
		}
		return b
	}
	f.cert, f.key, f.ca = rd(s.o.CertFile), rd(s.o.KeyFile), rd(s.o.CAFile)
	h := sha256.New()
	for _, b := range [][]byte{f.cert, f.key, f.ca} {
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return f, sum, err
}

func (s *Store) parse(f files) (*material, error) {
	m := &material{}
	if s.o.CertFile != "" {
		c, err := tls.X509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, fmt.Errorf("tls %s: certificate %s with key %s: %w", s.o.Name, s.o.CertFile, s.o.KeyFile, err)
		}
		m.cert = &c
		m.notAfter = c.Leaf.NotAfter
	}
	if s.o.CAFile != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(f.ca) || !bytes.Contains(f.ca, []byte("-----BEGIN CERTIFICATE-----")) {
			return nil, fmt.Errorf("tls %s: CA file %s: no PEM certificate in it", s.o.Name, s.o.CAFile)
		}
		m.pool = pool
	}
	return m, nil
}

// refresh re-reads the files when the interval has passed since the last
// check (or force) and switches to them when they changed and load.
func (s *Store) refresh(force bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if !force && s.o.Interval > 0 && now.Sub(s.checked) < s.o.Interval {
		return nil
	}
	s.checked = now
	raw, sum, err := s.read()
	if sum == s.seen && err == nil {
		return nil
	}
	if err == nil {
		var m *material
		if m, err = s.parse(raw); err == nil {
			s.seen = sum
			s.cur.Store(m)
			s.log.Info("tls files changed on disk; new certificate in use for new connections",
				"cert", s.o.CertFile, "ca", s.o.CAFile, "not_after", m.notAfter)
			return nil
		}
	}
	if sum != s.seen {
		// Logged once per content: a rotation half done is retried at
		// every check until it completes, quietly.
		s.seen = sum
		s.log.Error("tls files changed on disk but do not load; keeping the previous certificate",
			"err", err.Error())
	}
	return err
}

// Reload checks the files now, whatever the interval; it returns why a
// changed set did not load (the previous one stays in use), nil otherwise.
func (s *Store) Reload() error { return s.refresh(true) }

func (s *Store) current() *material {
	_ = s.refresh(false)
	return s.cur.Load()
}

// Certificate returns the certificate in use (checking the files first
// when the interval has passed); nil when none is configured.
func (s *Store) Certificate() *tls.Certificate { return s.current().cert }

// NotAfter is the expiry of the certificate in use (zero without one).
func (s *Store) NotAfter() time.Time { return s.cur.Load().notAfter }

// ServerConfig returns a server tls.Config (TLS 1.2+) that serves the
// current certificate. With a CA file it requests a client certificate
// and, when one is sent, verifies it against the current CA pool for
// client authentication; without one the handshake still succeeds (the
// caller may accept another credential, or refuse). Its PeerCertificates
// are then verified: see the package doc.
func (s *Store) ServerConfig() *tls.Config {
	c := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if cert := s.Certificate(); cert != nil {
				return cert, nil
			}
			return nil, fmt.Errorf("tls %s: no server certificate configured", s.o.Name)
		},
	}
	if s.o.CAFile != "" {
		c.ClientAuth = tls.RequestClientCert
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil
			}
			return verify(cs.PeerCertificates, s.current().pool, "", x509.ExtKeyUsageClientAuth)
		}
	}
	return c
}

// ClientConfig returns a client tls.Config (TLS 1.2+) that presents the
// current certificate (if any) and verifies the server's against the
// current CA pool (the system roots without a CA file) and serverName
// (empty: the host dialled).
func (s *Store) ClientConfig(serverName string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: serverName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cert := s.Certificate(); cert != nil {
				return cert, nil
			}
			return &tls.Certificate{}, nil // none: the server decides
		},
		// Verification is done in VerifyConnection against the pool current
		// at the handshake; the static path would pin the pool of the
		// first load.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verify(cs.PeerCertificates, s.current().pool, cs.ServerName, x509.ExtKeyUsageServerAuth)
		},
	}
}

// verify checks a peer's chain against roots (nil: the system's), for
// usage, and its name when name is not empty.
func verify(chain []*x509.Certificate, roots *x509.CertPool, name string, usage x509.ExtKeyUsage) error {
	if len(chain) == 0 {
		return errors.New("tls: the peer sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: name,
		KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}

// Listen binds a TCP address and returns a listener that does the TLS
// handshake with the certificate of certFile and keyFile (re-read as they
// change), offering HTTP/1.1 only: an HTTP server given it serves HTTPS
// (HTTP-FLV is a long-lived HTTP/1.1 response, as players expect). wrap,
// when not nil, wraps the TCP listener under TLS (connection limits). It
// fails when the files do not load or the address is busy.
func Listen(name, addr, certFile, keyFile string, log *slog.Logger, wrap func(net.Listener) net.Listener) (net.Listener, *Store, error) {
	st, err := New(Options{Name: name, CertFile: certFile, KeyFile: keyFile, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("%s listen: %w", name, err)
	}
	if wrap != nil {
		ln = wrap(ln)
	}
	cfg := st.ServerConfig()
	cfg.NextProtos = []string{"http/1.1"}
	return tls.NewListener(ln, cfg), st, nil
}
