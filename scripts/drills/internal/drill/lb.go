package drill

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/livecluster/livecluster/scripts/drills/internal/cluster"
)

// LB is a TCP load balancer on 127.0.0.1 in front of one port of a set of
// containers, as a Kubernetes Service with kube-proxy is: each new
// connection goes to the next backend that is ready (its /readyz answered
// 200 at the last check, every 200 ms); established connections stay
// where they are until either side closes them. A draining node fails
// readiness at once, so it gets no new connections while it finishes.
type LB struct {
	port int
	ln   net.Listener

	mu       sync.Mutex
	backends []*cluster.Container
	ready    map[*cluster.Container]string // address when ready
	next     int
	conns    map[net.Conn]struct{}
	closed   bool
	wg       sync.WaitGroup
	stop     context.CancelFunc
}

// NewLB listens on 127.0.0.1 (an ephemeral port) for port of the
// backends and runs until Close.
func NewLB(ctx context.Context, port int, backends ...*cluster.Container) (*LB, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("load balancer: %w", err)
	}
	ctx, stop := context.WithCancel(ctx)
	lb := &LB{port: port, ln: ln, backends: backends, ready: map[*cluster.Container]string{},
		conns: map[net.Conn]struct{}{}, stop: stop}
	lb.check(ctx)
	lb.wg.Go(func() { lb.checkLoop(ctx) })
	lb.wg.Go(func() { lb.accept(ctx) })
	return lb, nil
}

// Addr is the load balancer's host:port.
func (lb *LB) Addr() string { return lb.ln.Addr().String() }

// Add adds a backend (a new pod of the Service).
func (lb *LB) Add(k *cluster.Container) {
	lb.mu.Lock()
	lb.backends = append(lb.backends, k)
	lb.mu.Unlock()
}

// Close stops accepting, closes every proxied connection and waits for
// the load balancer's goroutines.
func (lb *LB) Close() {
	lb.stop()
	lb.ln.Close()
	lb.mu.Lock()
	lb.closed = true
	for c := range lb.conns {
		c.Close()
	}
	lb.mu.Unlock()
	lb.wg.Wait()
}

func (lb *LB) checkLoop(ctx context.Context) {
	for Sleep(ctx, 200*time.Millisecond) == nil {
		lb.check(ctx)
	}
}

// check asks every backend's /readyz (500 ms bound each).
func (lb *LB) check(ctx context.Context) {
	lb.mu.Lock()
	bs := append([]*cluster.Container(nil), lb.backends...)
	lb.mu.Unlock()
	client := &http.Client{Timeout: 500 * time.Millisecond}
	ready := map[*cluster.Container]string{}
	for _, k := range bs {
		admin, err := k.Addr(ctx, cluster.PortAdmin)
		if err != nil {
			continue
		}
		resp, err := client.Get("http://" + admin + "/readyz")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			host, _, _ := net.SplitHostPort(admin)
			ready[k] = net.JoinHostPort(host, strconv.Itoa(lb.port))
		}
	}
	lb.mu.Lock()
	lb.ready = ready
	lb.mu.Unlock()
}

// pick returns the next ready backend's address, round robin.
func (lb *LB) pick() (string, bool) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	for i := 0; i < len(lb.backends); i++ {
		k := lb.backends[(lb.next+i)%len(lb.backends)]
		if a, ok := lb.ready[k]; ok {
			lb.next = (lb.next + i + 1) % len(lb.backends)
			return a, true
		}
	}
	return "", false
}

func (lb *LB) accept(ctx context.Context) {
	for {
		c, err := lb.ln.Accept()
		if err != nil {
			return
		}
		lb.wg.Go(func() { lb.proxy(ctx, c) })
	}
}

// track registers (on) or forgets a proxied connection; it refuses to
// register once the load balancer is closed.
func (lb *LB) track(c net.Conn, on bool) bool {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if !on {
		delete(lb.conns, c)
		return true
	}
	if lb.closed {
		return false
	}
	lb.conns[c] = struct{}{}
	return true
}

func (lb *LB) proxy(ctx context.Context, c net.Conn) {
	defer c.Close()
	addr, ok := lb.pick()
	if !ok {
		return // no ready endpoint: the connection is closed, as kube-proxy rejects it
	}
	up, err := (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return
	}
	defer up.Close()
	if !lb.track(c, true) || !lb.track(up, true) {
		return
	}
	defer lb.track(c, false)
	defer lb.track(up, false)
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); closeWrite(up); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); closeWrite(c); done <- struct{}{} }()
	<-done
	<-done
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}
