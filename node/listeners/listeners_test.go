package listeners

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livecluster/livecluster/node/config"
	"github.com/livecluster/livecluster/node/connlimit"
)

func limits() *connlimit.Node {
	return connlimit.NewNode(prometheus.NewRegistry(), func() config.Limits { return config.Limits{} })
}

func refuse(context.Context, net.Conn, error) {}

// freeAddr returns a loopback address nobody listens on (as far as a
// closed listener can promise).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestOpenAndClose(t *testing.T) {
	s, err := Open(Addresses{RTMP: "127.0.0.1:0", HTTP: "127.0.0.1:0"}, limits(), refuse, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	if s.HTTPS != nil {
		t.Fatal("HTTPS listener without an HTTPS address")
	}
	if got := s.HTTPListeners(); len(got) != 1 || got["http"] != s.HTTP {
		t.Fatalf("HTTPListeners = %v, want only http", got)
	}
	rtmpAddr := s.RTMP.Addr().String()
	s.Close()
	// Closed means the port is free again.
	ln, err := net.Listen("tcp", rtmpAddr)
	if err != nil {
		t.Fatalf("RTMP port still taken after Close: %v", err)
	}
	ln.Close()
}

// A failure names the key of the address and leaves no port taken.
func TestOpenFailureClosesWhatItOpened(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	rtmpAddr := freeAddr(t)

	_, err = Open(Addresses{RTMP: rtmpAddr, HTTP: busy.Addr().String()}, limits(), refuse, slog.Default())
	if err == nil || !strings.HasPrefix(err.Error(), "http.listen: ") {
		t.Fatalf("busy HTTP port: err = %v, want http.listen: ...", err)
	}
	ln, err := net.Listen("tcp", rtmpAddr)
	if err != nil {
		t.Fatalf("RTMP port left open after the HTTP failure: %v", err)
	}
	ln.Close()

	httpAddr := freeAddr(t)
	_, err = Open(Addresses{RTMP: rtmpAddr, HTTP: httpAddr, HTTPS: config.HTTPS{
		Listen: "127.0.0.1:0", CertFile: t.TempDir() + "/missing.crt", KeyFile: t.TempDir() + "/missing.key",
	}}, limits(), refuse, slog.Default())
	if err == nil || !strings.HasPrefix(err.Error(), "https: ") {
		t.Fatalf("missing certificate: err = %v, want https: ...", err)
	}
	for _, a := range []string{rtmpAddr, httpAddr} {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("%s left open after the HTTPS failure: %v", a, err)
		}
		ln.Close()
	}
}
