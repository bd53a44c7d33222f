package config

import (
	"errors"
	"fmt"
)

// ServerTLS is a TLS certificate a listener serves. The files are re-read
// when they change on disk (package node/tlsfiles), so a certificate that
// cert-manager rotates in a mounted Secret is served from the next
// handshake on, without a restart.
type ServerTLS struct {
	// CertFile is the PEM certificate chain; empty: no TLS.
	CertFile string `yaml:"certFile"`
	// KeyFile is the PEM private key of CertFile.
	KeyFile string `yaml:"keyFile"`
	// ClientCAFile, when set, makes the listener ask for client
	// certificates and verify them against these PEM CAs (mTLS). A client
	// without one can still connect; what it may do then is up to the
	// listener (the OCM wants a token instead).
	ClientCAFile string `yaml:"clientCAFile"`
}

// Enabled reports whether a certificate is configured.
func (t ServerTLS) Enabled() bool { return t.CertFile != "" }

// Validate checks the pair; key is the key path for error messages.
func (t ServerTLS) Validate(key string) error {
	if (t.CertFile == "") != (t.KeyFile == "") {
		return fmt.Errorf("%s.certFile, %s.keyFile: give both or neither", key, key)
	}
	if t.ClientCAFile != "" && t.CertFile == "" {
		return fmt.Errorf("%s.clientCAFile: needs %s.certFile and %s.keyFile (client certificates need TLS)", key, key, key)
	}
	return nil
}

// ClientTLS is how a node dials a TLS server (the OCM).
type ClientTLS struct {
	// Enabled dials with TLS; it is implied when any file is set.
	Enabled bool `yaml:"enabled"`
	// CAFile holds the PEM CAs that sign the server's certificate; empty:
	// the system roots.
	CAFile string `yaml:"caFile"`
	// CertFile and KeyFile are the client certificate presented to the
	// server (mTLS); its identity is the node's (docs/security.md).
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
	// ServerName overrides the name checked in the server's certificate
	// (default: the host of the address dialled).
	ServerName string `yaml:"serverName"`
}

// On reports whether TLS is used.
func (t ClientTLS) On() bool {
	return t.Enabled || t.CAFile != "" || t.CertFile != "" || t.KeyFile != ""
}

// Validate checks the pair; key is the key path for error messages.
func (t ClientTLS) Validate(key string) error {
	if (t.CertFile == "") != (t.KeyFile == "") {
		return fmt.Errorf("%s.certFile, %s.keyFile: give both or neither", key, key)
	}
	return nil
}

// Token is a bearer token, inline or (better, as a mounted Secret) in a
// file that is re-read when it changes.
type Token struct {
	// Token is the value itself (env LIVECLUSTER_..._TOKEN); prefer
	// TokenFile.
	Token string `yaml:"token"`
	// TokenFile holds the token (surrounding white space is ignored).
	TokenFile string `yaml:"tokenFile"`
}

// Set reports whether a token is configured.
func (t Token) Set() bool { return t.Token != "" || t.TokenFile != "" }

// Validate checks that at most one source is given.
func (t Token) Validate(key string) error {
	if t.Token != "" && t.TokenFile != "" {
		return fmt.Errorf("%s.token, %s.tokenFile: give one, not both", key, key)
	}
	return nil
}

// Admin secures the admin port (adminListen).
type Admin struct {
	// TLS serves the admin port over HTTPS when a certificate is set.
	// Probes then use scheme HTTPS; /healthz and /readyz stay open.
	TLS ServerTLS `yaml:"tls"`
	// Token, when set, is required (Authorization: Bearer) by every
	// request that changes something (POST, PUT, PATCH, DELETE), on the
	// admin port and on the origin's HTTP API alike.
	Token `yaml:",inline"`
}

// HTTPS is a separate HTTPS listener serving what the HTTP listener serves
// (HTTP-FLV, HLS, the HTTP API), like SRS's https port.
type HTTPS struct {
	// Listen is the HTTPS address, e.g. ":8443"; empty: no HTTPS.
	Listen string `yaml:"listen"`
	// CertFile and KeyFile are required when Listen is set.
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
}

// Validate checks the listener; key is the key path.
func (h HTTPS) Validate(key string) error {
	if h.Listen == "" {
		if h.CertFile != "" || h.KeyFile != "" {
			return fmt.Errorf("%s.listen: must be set when %s.certFile is (or remove the certificate)", key, key)
		}
		return nil
	}
	if err := ValidListen(h.Listen); err != nil {
		return fmt.Errorf("%s.listen: %w", key, err)
	}
	if h.CertFile == "" || h.KeyFile == "" {
		return fmt.Errorf("%s.certFile, %s.keyFile: required when %s.listen is set", key, key, key)
	}
	return nil
}

// OCMSecurity is how an origin or an edge authenticates to the OCM: a
// client certificate (mTLS), a bearer token, or both.
type OCMSecurity struct {
	TLS ClientTLS `yaml:"tls"`
	// Token is sent as "authorization: Bearer" on every call.
	Token `yaml:",inline"`
}

// Validate checks the OCM security keys under key ("ocm").
func (o OCMSecurity) Validate(key string) error {
	return errors.Join(o.TLS.Validate(key+".tls"), o.Token.Validate(key))
}
