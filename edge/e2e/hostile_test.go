package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/livecluster/livecluster/media/rtmp"
	"github.com/livecluster/livecluster/node/proctest"
	"github.com/livecluster/livecluster/node/tlsfiles/tlstest"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

const (
	hostOriginToken  = "origin-h1-token-0123456789abcdef"
	hostOrigin2Token = "origin-h2-token-0123456789abcdef"
	// hostFlood is how many idle TCP connections the drill opens in all.
	hostFlood = 10000
	// hostPerIP is limits.maxConnsPerIP on the data-plane listeners: the
	// flood comes from one address, so past it connections are refused.
	// Low enough that the flood passes it even when dialing is slow: a
	// listener holds what it accepted for its 2 s deadline, so the cap is
	// reached only if more than hostPerIP/2 dials a second reach it (at
	// 1000, a loaded machine's ~120/s per listener never did).
	hostPerIP = 100
	// floodSource is the one address the flood comes from (see the flood).
	floodSource = "127.0.0.9"
)

// procFigures are one process's goroutines and open fds from its /metrics.
type procFigures struct{ Goroutines, FDs float64 }

// TestHostileInputDrill runs a real OCM (role tokens over TLS), an origin
// and an edge, plays one ffmpeg stream through the edge with a Go reader,
// and throws hostile input at every port: garbage, truncated RTMP
// handshakes, 10,000 idle connections, a huge chunk size and message
// length, timestamps that jump backwards, an unsupported codec, forged
// OCM calls. No process may crash, each bad input gets its defined answer,
// the played stream never stalls, ownership is unchanged, and goroutines
// and fds come back to their baseline.
func TestHostileInputDrill(t *testing.T) {
	t.Parallel()
	skipShort(t)
	ffmpeg := proctest.Tool(t, "LIVECLUSTER_FFMPEG", "ffmpeg")
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatalf("raise RLIMIT_NOFILE: %v", err)
		}
	}
	if lim.Cur < hostFlood+2000 {
		t.Skipf("RLIMIT_NOFILE %d is below the %d connections of the drill", lim.Cur, hostFlood+2000)
	}

	dir := t.TempDir()
	ca := tlstest.NewCA(t, "livecluster-test-ca")
	local := []string{"127.0.0.1", "localhost"}
	ocmTLS := ca.SecretDir(t, filepath.Join(dir, "ocm-tls"), ca.Issue(t, tlstest.Leaf{CommonName: "ocm", Hosts: local}), 1)
	edgeTok := writeFile(t, filepath.Join(dir, "edge.token"), secEdgeToken+"\n")
	originTok := writeFile(t, filepath.Join(dir, "origin.token"), hostOriginToken+"\n")
	origin2Tok := writeFile(t, filepath.Join(dir, "origin2.token"), hostOrigin2Token+"\n")
	adminTok := writeFile(t, filepath.Join(dir, "admin.token"), secAdminToken+"\n")

	ocmAddr, ocmAdmin := proctest.FreeAddr(t), proctest.FreeAddr(t)
	ocmCfg := writeFile(t, filepath.Join(dir, "ocm.yaml"), fmt.Sprintf(`
grpc:
  tls:
    certFile: %s
    keyFile: %s
auth:
  tokens:
    - identity: "origin:origin-h1"
      tokenFile: %s
    - identity: "origin:origin-h2"
      tokenFile: %s
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
`, ocmTLS.Cert, ocmTLS.Key, originTok, origin2Tok, edgeTok, adminTok, proctest.FreeAddr(t), proctest.FreeAddr(t)))
	ocm := proctest.Start(t, "ocm", bins.ocm, "--config", ocmCfg, "--node-id", "ocm-0",
		"--grpc-listen", ocmAddr, "--admin-listen", ocmAdmin, "--data-dir", filepath.Join(dir, "etcd"))
	proctest.WaitHTTP(t, "http://"+ocmAdmin+"/readyz", 200, 30*time.Second)

	// Short deadlines so the flood is cut within seconds; the per-IP cap
	// refuses the rest of it.
	limits := fmt.Sprintf(`
limits:
  maxConnsPerIP: %d
  timeouts:
    rtmpHandshake: 2s
    rtmpIdle: 5s
    httpReadHeader: 2s
`, hostPerIP)
	org := &node{id: "origin-h1", rtmp: proctest.FreeAddr(t), http: proctest.FreeAddr(t), admin: proctest.FreeAddr(t)}
	originCfg := writeFile(t, filepath.Join(dir, "origin.yaml"), fmt.Sprintf(`
ocm:
  tls:
    caFile: %s
  tokenFile: %s
hls:
  fragment: 1s
shutdown:
  startWait: 100ms
  finalWait: 0s
%s`, ocmTLS.CA, originTok, limits))
	org.Proc = proctest.Start(t, org.id, bins.origin, "--config", originCfg, "--node-id", org.id, "--ocm", ocmAddr,
		"--rtmp-listen", org.rtmp, "--http-listen", org.http, "--admin-listen", org.admin,
		"--advertise-host", "127.0.0.1", "--hls-dir", filepath.Join(dir, "hls"))
	proctest.WaitHTTP(t, "http://"+org.admin+"/readyz", 200, 30*time.Second)

	edg := &node{id: "edge-h1", rtmp: proctest.FreeAddr(t), http: proctest.FreeAddr(t), admin: proctest.FreeAddr(t)}
	edgeCfg := writeFile(t, filepath.Join(dir, "edge.yaml"), fmt.Sprintf(`
ocm:
  tls:
    caFile: %s
  tokenFile: %s
edge:
  waitTimeout: 5s
shutdown:
  startWait: 100ms
  drainTimeout: 2s
  finalWait: 0s
%s`, ocmTLS.CA, edgeTok, limits))
	edg.Proc = proctest.Start(t, edg.id, bins.edge, "--config", edgeCfg, "--node-id", edg.id, "--ocm", ocmAddr,
		"--rtmp-listen", edg.rtmp, "--http-listen", edg.http, "--admin-listen", edg.admin, "--advertise-host", "127.0.0.1")
	proctest.WaitHTTP(t, "http://"+edg.admin+"/readyz", 200, 30*time.Second)

	// The stream everything must leave alone.
	flv := proctest.MakeTestFLV(t, ffmpeg, dir, 10, 30)
	proctest.Start(t, "publisher", ffmpeg, "-nostdin", "-v", "error", "-re", "-stream_loop", "-1",
		"-i", flv, "-c", "copy", "-f", "flv", "rtmp://"+org.rtmp+"/live/main")
	admin := dialOCM(t, ocmAddr, ocmTLS.CA, secAdminToken)
	key := &ocmv1.StreamKey{App: "live", Name: "main"}
	owner := func() (string, int64) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := admin.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: key})
		if err != nil {
			return err.Error(), 0
		}
		return r.GetStream().GetOwnerNodeId(), r.GetStream().GetEpoch()
	}
	waitFor(t, "origin-h1 owns live/main", 20*time.Second, func() bool { o, _ := owner(); return o == "origin-h1" })
	_, epoch := owner()
	var pl *player
	waitFor(t, "playing live/main through the edge", 20*time.Second, func() bool {
		var err error
		pl, err = startPlayer("rtmp://" + edg.rtmp + "/live/main")
		return err == nil
	})
	defer pl.stop()
	time.Sleep(3 * time.Second)
	pl.resetGap()

	procs := []struct {
		name, admin string
		p           *proctest.Proc
	}{{"ocm", ocmAdmin, ocm}, {"origin", org.admin, org.Proc}, {"edge", edg.admin, edg.Proc}}
	figures := func(adminAddr string) procFigures {
		return procFigures{metric(t, adminAddr, "go_goroutines"), metric(t, adminAddr, "process_open_fds")}
	}
	before := map[string]procFigures{}
	peak := map[string]procFigures{}
	for _, p := range procs {
		before[p.name] = figures(p.admin)
		peak[p.name] = before[p.name]
	}
	rejected := func() map[string]float64 {
		m := map[string]float64{}
		for _, n := range []*node{org, edg} {
			for _, l := range []string{"rtmp", "http"} {
				for _, r := range []string{"max_conns", "max_conns_per_ip", "handshake_timeout", "header_timeout", "idle_timeout"} {
					m[n.id+"/"+l+"/"+r] = metric(t, n.admin, "livecluster_conns_rejected_total", `listener="`+l+`"`, `reason="`+r+`"`)
				}
			}
		}
		return m
	}
	rejBefore := rejected()

	// Sample goroutines and fds while the drill runs.
	sampleCtx, stopSampling := context.WithCancel(context.Background())
	var sampleWG sync.WaitGroup
	var peakMu sync.Mutex
	sampleWG.Add(1)
	go func() {
		defer sampleWG.Done()
		for sampleCtx.Err() == nil {
			for _, p := range procs {
				resp, err := http.Get("http://" + p.admin + "/metrics")
				if err != nil {
					continue
				}
				f := parseFigures(resp.Body)
				resp.Body.Close()
				peakMu.Lock()
				pk := peak[p.name]
				pk.Goroutines, pk.FDs = max(pk.Goroutines, f.Goroutines), max(pk.FDs, f.FDs)
				peak[p.name] = pk
				peakMu.Unlock()
			}
			select {
			case <-sampleCtx.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()

	thrown := 0
	// 1. Garbage at every port. HTTP ports answer 400; the others close.
	httpPorts := []string{org.http, edg.http, org.admin, edg.admin, ocmAdmin}
	for _, addr := range httpPorts {
		junk := garbage(4096)
		junk = append(junk, "\r\n\r\n"...)
		got := sendAndRead(t, addr, junk, 10*time.Second)
		thrown++
		if !strings.HasPrefix(got, "HTTP/1.1 4") {
			t.Errorf("garbage to HTTP port %s: answered %q, want a 4xx", addr, firstLine(got))
		}
	}
	for _, addr := range []string{org.rtmp, edg.rtmp, ocmAddr} {
		junk := garbage(64 << 10)
		junk[0] = 0xfe // not an RTMP version byte
		start := time.Now()
		sendAndRead(t, addr, junk, 15*time.Second)
		thrown++
		if d := time.Since(start); d > 12*time.Second {
			t.Errorf("garbage to %s: connection held %v", addr, d)
		}
	}

	// 2. Truncated RTMP handshakes: C0 and part of C1, then silence; cut
	// at limits.timeouts.rtmpHandshake (2s).
	for _, addr := range []string{org.rtmp, edg.rtmp} {
		for i := 0; i < 5; i++ {
			part := append([]byte{3}, garbage(700)...)
			start := time.Now()
			sendAndRead(t, addr, part, 15*time.Second)
			thrown++
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("truncated handshake to %s held %v (rtmpHandshake 2s)", addr, d)
			}
		}
	}

	// 3. A huge chunk size: refused (the connection closes at once).
	for _, addr := range []string{org.rtmp, edg.rtmp} {
		nc := rawRTMP(t, addr)
		thrown++
		msg := []byte{2, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0}
		msg = binary.BigEndian.AppendUint32(msg, 0x7fffffff)
		nc.Write(msg)
		if d := closedWithin(nc, 10*time.Second); d > 3*time.Second {
			t.Errorf("huge chunk size to %s: connection held %v", addr, d)
		}
		// A huge message length announced, a few bytes sent: the server
		// buffers only what arrives and cuts the connection at its deadline.
		nc = rawRTMP(t, addr)
		thrown++
		nc.Write([]byte{3, 0, 0, 0, 0xff, 0xff, 0xff, 20, 0, 0, 0, 0, 2, 0, 7})
		if d := closedWithin(nc, 15*time.Second); d > 8*time.Second {
			t.Errorf("huge message length to %s: connection held %v", addr, d)
		}
	}

	// 4. Timestamps that jump backwards, and an unsupported codec, each
	// published as its own stream at the origin.
	tags := readFLVTags(t, flv, 200)
	for i, tg := range tags {
		ts := uint32(i%50) * 40 // back to 0 every 50 tags
		if i > 100 {
			ts = 0xffffff00 + uint32(i) // and a wrap to the far past
		}
		tg[4], tg[5], tg[6], tg[7] = byte(ts>>16), byte(ts>>8), byte(ts), byte(ts>>24)
	}
	if err := publishTags(t, "rtmp://"+org.rtmp+"/live/backwards", tags); err != nil {
		t.Logf("timestamps going backwards: the origin ended the publish: %v", err)
	}
	thrown++
	hevc := []byte{9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	body := append([]byte{0x1d, 0, 0, 0, 0}, garbage(500)...) // keyframe, codec id 13
	hevc[1], hevc[2], hevc[3] = byte(len(body)>>16), byte(len(body)>>8), byte(len(body))
	hevc = append(hevc, body...)
	codecTags := [][]byte{}
	for i := 0; i < 30; i++ {
		tg := append([]byte(nil), hevc...)
		ts := uint32(i * 33)
		tg[4], tg[5], tg[6] = byte(ts>>16), byte(ts>>8), byte(ts)
		codecTags = append(codecTags, tg)
	}
	// At the origin and forwarded by the edge: the publisher is told the
	// codec id, and nothing of it is served.
	for _, u := range []string{"rtmp://" + org.rtmp + "/live/codec13o", "rtmp://" + edg.rtmp + "/live/codec13e"} {
		err := publishTags(t, u, codecTags)
		thrown++
		if err == nil || !strings.Contains(err.Error(), "video codec id 13") {
			t.Errorf("publish with video codec id 13 to %s: %v, want an error naming the codec id", u, err)
		}
	}
	for _, name := range []string{"codec13o", "codec13e"} {
		if code, _ := httpGet(t, "http://"+org.http+"/live/"+name+".m3u8"); code/100 != 4 {
			t.Errorf("HLS of a stream with codec id 13: %d, want a 4xx", code)
		}
	}

	// 5. Forged control-plane calls.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	anon := dialOCM(t, ocmAddr, ocmTLS.CA, "")
	asEdge := dialOCM(t, ocmAddr, ocmTLS.CA, secEdgeToken)
	asOther := dialOCM(t, ocmAddr, ocmTLS.CA, hostOrigin2Token)
	forged := []struct {
		what string
		want codes.Code
		call func() error
	}{
		{"anonymous register", codes.Unauthenticated, func() error {
			_, err := anon.Register(ctx, &ocmv1.RegisterRequest{Node: &ocmv1.Node{Id: "origin-h1", Role: ocmv1.NodeRole_NODE_ROLE_ORIGIN}})
			return err
		}},
		{"anonymous claim", codes.Unauthenticated, func() error {
			_, err := anon.ClaimStream(ctx, &ocmv1.ClaimStreamRequest{NodeId: "origin-h1", Key: key})
			return err
		}},
		{"anonymous transfer", codes.Unauthenticated, func() error {
			_, err := anon.TransferStream(ctx, &ocmv1.TransferStreamRequest{NodeId: "origin-h1", Key: key, Epoch: epoch, ToNodeId: "origin-h2"})
			return err
		}},
		{"edge token registers as origin-h1", codes.PermissionDenied, func() error {
			_, err := asEdge.Register(ctx, &ocmv1.RegisterRequest{Node: &ocmv1.Node{Id: "origin-h1", Role: ocmv1.NodeRole_NODE_ROLE_ORIGIN}})
			return err
		}},
		{"origin-h2 claims for origin-h1", codes.PermissionDenied, func() error {
			_, err := asOther.ClaimStream(ctx, &ocmv1.ClaimStreamRequest{NodeId: "origin-h1", Key: key})
			return err
		}},
		{"origin-h2 transfers origin-h1's stream", codes.PermissionDenied, func() error {
			_, err := asOther.TransferStream(ctx, &ocmv1.TransferStreamRequest{NodeId: "origin-h1", Key: key, Epoch: epoch, ToNodeId: "origin-h2"})
			return err
		}},
		{"origin-h2 registers as origin-h1", codes.PermissionDenied, func() error {
			_, err := asOther.Register(ctx, &ocmv1.RegisterRequest{Node: &ocmv1.Node{Id: "origin-h1", Role: ocmv1.NodeRole_NODE_ROLE_ORIGIN}})
			return err
		}},
	}
	for _, f := range forged {
		wantStatus(t, f.call(), f.want, f.what)
		thrown++
	}

	// 6. The idle flood: 10,000 connections that say nothing, spread over
	// every port. The data-plane listeners take hostPerIP from one address
	// and refuse the rest; what they take is cut at its deadline (2s); the
	// admin ports and the OCM's gRPC port cut theirs at 10s (header /
	// HTTP/2 preface).
	targets := []struct {
		addr string
		n    int
	}{
		{org.rtmp, 2000}, {org.http, 2000}, {edg.rtmp, 2000}, {edg.http, 2000},
		{org.admin, 400}, {edg.admin, 400}, {ocmAdmin, 400}, {ocmAddr, 800},
	}
	var floodOpen, floodFailed atomic.Int64
	var maxHeld atomic.Int64
	var floodWG sync.WaitGroup
	// The flood's one address is floodSource, not 127.0.0.1: its 10,000
	// connections each hold a local port of the ephemeral range, and on
	// 127.0.0.1 they took ports that tests running meanwhile (this
	// package's, in parallel, and other packages') had just picked with
	// FreeAddr for a child to listen on ("bind: address already in use").
	// A local port held on another address does not stop a listener on
	// 127.0.0.1 with the same number.
	floodDialer := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(floodSource)}}
	floodStart := time.Now()
	// Batches of 50 connections per goroutine, not one goroutine each: the
	// race detector allows 8128 live goroutines. A batch dials its
	// connections, then waits for each to close in the order they opened
	// (the order the server's deadlines cut them), so the hold it measures
	// for each is at most a little long, never short.
	const batch = 50
	for _, tg := range targets {
		for i := 0; i < tg.n; i += batch {
			floodWG.Add(1)
			go func(addr string, n int) {
				defer floodWG.Done()
				type held struct {
					nc     net.Conn
					opened time.Time
				}
				var conns []held
				for j := 0; j < n; j++ {
					nc, err := floodDialer.Dial("tcp", addr)
					if err != nil {
						floodFailed.Add(1)
						continue
					}
					floodOpen.Add(1)
					conns = append(conns, held{nc, time.Now()})
				}
				for _, c := range conns {
					closedWithin(c.nc, time.Until(c.opened.Add(40*time.Second)))
					d := int64(time.Since(c.opened))
					for {
						cur := maxHeld.Load()
						if d <= cur || maxHeld.CompareAndSwap(cur, d) {
							break
						}
					}
				}
			}(tg.addr, min(batch, tg.n-i))
		}
	}
	floodWG.Wait()
	floodDur := time.Since(floodStart)
	thrown += hostFlood
	if d := time.Duration(maxHeld.Load()); d > 20*time.Second {
		t.Errorf("an idle connection was held %v (deadlines are 2s on the data plane, 10s on admin and gRPC)", d)
	}
	rejAfter := rejected()
	refused := map[string]float64{}
	for k, v := range rejAfter {
		if d := v - rejBefore[k]; d > 0 {
			refused[k] = d
		}
	}
	// Every flood connection to a data-plane listener was refused or cut,
	// and counted: by the per-IP cap or by its deadline.
	for _, n := range []*node{org, edg} {
		for _, l := range []struct{ name, deadline string }{{"rtmp", "handshake_timeout"}, {"http", "header_timeout"}} {
			perIP, cut := refused[n.id+"/"+l.name+"/max_conns_per_ip"], refused[n.id+"/"+l.name+"/"+l.deadline]
			if perIP+cut < 2000 {
				t.Errorf("%s %s: %v refused by the per-IP cap + %v cut at %s, want the 2000 flood connections", n.id, l.name, perIP, cut, l.deadline)
			}
			if perIP < 1 {
				t.Errorf("%s %s: no flood connection refused by maxConnsPerIP (%d)", n.id, l.name, hostPerIP)
			}
			if cut < 1 {
				t.Errorf("%s %s: no connection cut at %s", n.id, l.name, l.deadline)
			}
		}
	}

	// The played stream went on, ownership is unchanged, nothing crashed.
	if o, e := owner(); o != "origin-h1" || e != epoch {
		t.Errorf("after the drill the owner is %s at epoch %d, want origin-h1 at %d", o, e, epoch)
	}
	for _, p := range procs {
		if p.p.Exited() {
			t.Errorf("%s exited during the drill:\n%s", p.name, p.p.Output())
		}
		if strings.Contains(p.p.Output(), "panic:") {
			t.Errorf("%s panicked:\n%s", p.name, p.p.Output())
		}
	}
	mark := pl.count()
	time.Sleep(2 * time.Second)
	st := pl.stats()
	if st.err != nil || st.packets <= mark {
		t.Errorf("the player through the edge stopped: %v (%d packets, %d before)", st.err, st.packets, mark)
	}
	if st.maxGap > 3*time.Second {
		t.Errorf("the played stream paused %v during the drill", st.maxGap)
	}

	// Goroutines and fds come back to their baseline.
	after := map[string]procFigures{}
	settle := time.Now()
	waitFor(t, "goroutines and fds back to baseline", 60*time.Second, func() bool {
		ok := true
		for _, p := range procs {
			f := figures(p.admin)
			after[p.name] = f
			b := before[p.name]
			if f.Goroutines > b.Goroutines+15 || f.FDs > b.FDs+10 {
				ok = false
			}
		}
		return ok
	})
	settled := time.Since(settle)
	stopSampling()
	sampleWG.Wait()

	type procOut struct{ Before, Peak, After procFigures }
	out := map[string]any{
		"thrown": thrown, "flood": hostFlood, "floodOpened": floodOpen.Load(), "floodDialFailed": floodFailed.Load(),
		"floodSeconds": floodDur.Seconds(), "maxHeldSeconds": time.Duration(maxHeld.Load()).Seconds(),
		"refused": refused, "maxGapSeconds": st.maxGap.Seconds(), "packets": st.packets,
		"settleSeconds": settled.Seconds(), "owner": "origin-h1", "epoch": epoch,
	}
	pr := map[string]procOut{}
	for _, p := range procs {
		pr[p.name] = procOut{before[p.name], peak[p.name], after[p.name]}
	}
	out["procs"] = pr
	line, _ := json.Marshal(out)
	fmt.Fprintf(os.Stdout, "HOSTILE-DRILL %s\n", line)
}

func garbage(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// sendAndRead writes b and returns what the server answers until it
// closes the connection (or d passes).
func sendAndRead(t *testing.T, addr string, b []byte, d time.Duration) string {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(d))
	nc.Write(b)
	got, _ := io.ReadAll(io.LimitReader(nc, 1<<20))
	return string(got)
}

// closedWithin reads until the server closes nc (or max passes) and
// returns how long that took; nc is closed on return.
func closedWithin(nc net.Conn, max time.Duration) time.Duration {
	defer nc.Close()
	start := time.Now()
	nc.SetReadDeadline(start.Add(max))
	buf := make([]byte, 4096)
	for {
		if _, err := nc.Read(buf); err != nil {
			return time.Since(start)
		}
	}
}

// rawRTMP dials addr and does a plain handshake (C0C1, S0S1S2, C2).
func rawRTMP(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	c0c1 := make([]byte, 1537)
	c0c1[0] = 3
	nc.Write(c0c1)
	s := make([]byte, 3073)
	if _, err := io.ReadFull(nc, s); err != nil {
		t.Fatalf("handshake with %s: %v", addr, err)
	}
	nc.Write(s[1:1537])
	nc.SetDeadline(time.Time{})
	return nc
}

// readFLVTags returns up to n tags (header and body, without the trailing
// size) of an FLV file.
func readFLVTags(t *testing.T, path string, n int) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var tags [][]byte
	for off := 13; off+11 <= len(b) && len(tags) < n; {
		size := int(b[off+1])<<16 | int(b[off+2])<<8 | int(b[off+3])
		if off+11+size > len(b) {
			break
		}
		tags = append(tags, append([]byte(nil), b[off:off+11+size]...))
		off += 11 + size + 4
	}
	if len(tags) == 0 {
		t.Fatalf("no tags in %s", path)
	}
	return tags
}

// publishTags publishes raw FLV tags with our RTMP client, then keeps
// sending the last tag for a few seconds, and returns the error the server
// ended the publish with (nil if it never did).
func publishTags(t *testing.T, url string, tags [][]byte) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := rtmp.Dial(ctx, url, rtmp.Config{})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	defer c.Close()
	if err := c.Publish(); err != nil {
		return err
	}
	for i := 0; i < len(tags); i += 10 {
		if err := c.WriteTags(tags[i:min(i+10, len(tags))]); err != nil {
			return err
		}
		time.Sleep(30 * time.Millisecond)
	}
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		if err := c.WriteTags(tags[len(tags)-1:]); err != nil {
			return err
		}
	}
	return nil
}

// parseFigures reads go_goroutines and process_open_fds from a /metrics body.
func parseFigures(r io.Reader) procFigures {
	var f procFigures
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "go_goroutines "):
			fmt.Sscan(line[len("go_goroutines "):], &f.Goroutines)
		case strings.HasPrefix(line, "process_open_fds "):
			fmt.Sscan(line[len("process_open_fds "):], &f.FDs)
		}
	}
	return f
}
