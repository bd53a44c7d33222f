package e2e

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
)

// cutProxy is a TCP proxy the test controls, standing for the network
// between two nodes: Freeze stops every connection open at that moment
// (nothing is read or written either way, and a close on one side does
// not reach the other), as a cut link does while both hosts live; later
// connections pass. Its upstream sockets have a small receive buffer, so
// a sender behind a frozen connection blocks soon, as it would once a cut
// link's buffers are full.
type cutProxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	conns  map[*proxyConn]struct{}
	closed bool
}

type proxyConn struct {
	a, b   net.Conn
	mu     sync.Mutex
	cond   *sync.Cond
	frozen bool
	closed bool
}

// startCutProxy listens on listen (host:port) and forwards to target.
func startCutProxy(t *testing.T, listen, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatalf("proxy listen %s: %v", listen, err)
	}
	p := &cutProxy{ln: ln, target: target, conns: map[*proxyConn]struct{}{}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.serve(&wg)
	}()
	t.Cleanup(func() {
		p.close()
		wg.Wait()
	})
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) serve(wg *sync.WaitGroup) {
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 8<<10)
		})
		return errors.Join(err, serr)
	}}
	for {
		a, err := p.ln.Accept()
		if err != nil {
			return
		}
		b, err := d.Dial("tcp", p.target)
		if err != nil {
			a.Close()
			continue
		}
		c := &proxyConn{a: a, b: b}
		c.cond = sync.NewCond(&c.mu)
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			a.Close()
			b.Close()
			return
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		wg.Add(2)
		go func() { defer wg.Done(); c.pipe(a, b) }()
		go func() { defer wg.Done(); c.pipe(b, a) }()
	}
}

// wait blocks while the connection is frozen; false once it is closed.
func (c *proxyConn) wait() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.frozen && !c.closed {
		c.cond.Wait()
	}
	return !c.closed
}

func (c *proxyConn) pipe(src, dst net.Conn) {
	buf := make([]byte, 4<<10)
	for {
		if !c.wait() {
			return
		}
		n, err := src.Read(buf)
		if !c.wait() {
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				c.shut()
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
					return
				}
			}
			c.shut()
			return
		}
	}
}

func (c *proxyConn) shut() {
	c.mu.Lock()
	c.closed = true
	c.cond.Broadcast()
	c.mu.Unlock()
	c.a.Close()
	c.b.Close()
}

// freeze cuts every connection open now; it returns how many.
func (p *cutProxy) freeze() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.mu.Lock()
		c.frozen = true
		c.mu.Unlock()
	}
	return len(p.conns)
}

func (p *cutProxy) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = map[*proxyConn]struct{}{}
	p.mu.Unlock()
	p.ln.Close()
	for c := range conns {
		c.shut()
	}
}
