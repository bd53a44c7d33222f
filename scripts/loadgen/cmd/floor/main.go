// Command floor measures the least CPU a fan-out server can spend: the same
// bytes (a stream's FLV tags chunked as RTMP once) written once per merge
// window to N TCP sockets with net.Buffers (writev) from one loop, and
// nothing else. N readers in a child process (pin it to the other core with
// -reader-cpus) read and discard. Every fan-out figure is stated as a
// multiple of this floor at the same window.
//
//	taskset -c 0 floor -flv test.flv -n 500,1000,2000 -window 0,20,50,100 -duration 10s -reader-cpus 1
//
// With -writers K the sockets are split into K fixed parts, each written
// by its own goroutine every window (as the edge's flushers split its
// players), so that the floor's cost on two cores can be set beside the
// edge's: the same set-up, nothing else in the process.
//
// With -hub the same sockets are written through the edge's hub instead
// (media/hub: its merge window, its flushers, one per core, and their
// non-blocking writev), fed the -flv file's packets at real time, with no
// protocol and nothing else in the process: the hub's own cost, beside
// the plain loop's and the edge's, on one core and on two (-writers does
// not apply: the hub runs a flusher per core). With -hub -listen ADDR the
// readers are N HTTP-FLV players that connect to ADDR (the load
// generator), not the child process.
//
// It prints one JSON line per point (n × window) to stdout: the writer's
// CPU seconds per second, per 100 sockets, writes and bytes per second,
// and how far the writer fell behind real time.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/livecluster/livecluster/scripts/loadgen/internal/flvtag"
	"github.com/livecluster/livecluster/scripts/loadgen/internal/procstat"
)

func main() {
	if readerChild() {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(2)
	}
}

type options struct {
	flv        string
	bitrate    int
	ns         []int
	windows    []time.Duration
	duration   time.Duration
	warmup     time.Duration
	chunk      int
	readerCPUs string
	writers    int
	hub        bool
	listen     string
}

func ints(s, what string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%s: %q is not a count", what, f)
		}
		out = append(out, n)
	}
	return out, nil
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	o := options{}
	var ns, windows string
	fs.StringVar(&o.flv, "flv", "", "FLV file whose tags are the stream (default: a synthetic stream of -bitrate)")
	fs.IntVar(&o.bitrate, "bitrate", 2_000_000, "bits per second of the synthetic stream (without -flv)")
	fs.StringVar(&ns, "n", "500,1000,2000,4000", "comma-separated socket counts")
	fs.StringVar(&windows, "window", "0,20,50,100", "comma-separated merge windows in ms (0: one write per tag)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per point (at most 1h)")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured time before each point")
	fs.IntVar(&o.chunk, "chunk", 4096, "RTMP chunk size")
	fs.StringVar(&o.readerCPUs, "reader-cpus", "", "run the readers under taskset -c LIST (e.g. 1); pin this process with taskset too")
	fs.IntVar(&o.writers, "writers", 1, "goroutines writing the sockets, each a fixed part of them (2 on two cores)")
	fs.StringVar(&o.listen, "listen", "", "with -hub: accept N HTTP-FLV players (the load generator) on this address instead of starting readers")
	fs.BoolVar(&o.hub, "hub", false, "write through the edge's hub (media/hub: its flushers, the FLV tags of -flv) instead of the plain loop")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if o.ns, err = ints(ns, "-n"); err != nil {
		return err
	}
	ws, err := ints(windows, "-window")
	if err != nil {
		return err
	}
	for _, w := range ws {
		o.windows = append(o.windows, time.Duration(w)*time.Millisecond)
	}
	if o.listen != "" && !o.hub {
		return errors.New("-listen needs -hub")
	}
	if o.duration <= 0 || o.duration > time.Hour || o.warmup < 0 || o.chunk < 128 || o.writers < 1 || o.writers > 64 {
		return errors.New("-duration must be in (0, 1h], -warmup ≥ 0, -chunk ≥ 128, -writers in [1, 64]")
	}
	st, err := loadStream(o)
	if err != nil {
		return err
	}
	var pk *packets
	if o.hub {
		if pk, err = loadPackets(o.flv); err != nil {
			return err
		}
	}
	if o.readerCPUs == "" {
		fmt.Fprintln(os.Stderr, "floor: hint: pin this process (taskset -c 0 floor ...) and the readers (-reader-cpus 1) to different cores")
	}
	enc := json.NewEncoder(os.Stdout)
	for _, n := range o.ns {
		for _, w := range o.windows {
			p, err := point(ctx, o, st, pk, n, w)
			if err != nil {
				return fmt.Errorf("n=%d window=%v: %w", n, w, err)
			}
			if err := enc.Encode(p); err != nil {
				return err
			}
			if ctx.Err() != nil {
				return nil
			}
		}
	}
	return nil
}

// stream is the media as pre-chunked RTMP messages with their send times.
type stream struct {
	msgs    [][]byte
	at      []time.Duration // send time of msgs[i] within a loop
	span    time.Duration   // one loop
	bitrate float64         // payload bits per second
}

// chunk serializes one RTMP message: a type-0 header, then a type-3 header
// before every further chunk, as every RTMP server sends it.
func chunk(typ uint8, ts uint32, body []byte, size int) []byte {
	csid := byte(6)
	if typ == flvtag.Audio {
		csid = 4
	}
	b := make([]byte, 0, 12+len(body)+len(body)/size+1)
	b = append(b, csid, byte(ts>>16), byte(ts>>8), byte(ts), byte(len(body)>>16), byte(len(body)>>8), byte(len(body)), typ)
	b = binary.LittleEndian.AppendUint32(b, 1) // message stream id
	for off := 0; off < len(body); off += size {
		if off > 0 {
			b = append(b, 0xc0|csid)
		}
		b = append(b, body[off:min(off+size, len(body))]...)
	}
	return b
}

func loadStream(o options) (*stream, error) {
	s := &stream{}
	var bytes int
	if o.flv != "" {
		tags, err := flvtag.ReadFile(o.flv)
		if err != nil {
			return nil, err
		}
		var base, last uint32
		first := true
		for _, t := range tags {
			if (t.Type != flvtag.Audio && t.Type != flvtag.Video) || t.SeqHeader() || (t.Type == flvtag.Video && t.AVCNALUs() == nil) {
				continue // headers, AVC end of sequence
			}
			if first {
				base, first = t.TS, false
			}
			ts := t.TS - min(t.TS, base)
			s.msgs = append(s.msgs, chunk(t.Type, ts, t.Body, o.chunk))
			s.at = append(s.at, time.Duration(ts)*time.Millisecond)
			bytes += len(t.Body)
			last = max(last, ts)
		}
		if len(s.msgs) == 0 {
			return nil, fmt.Errorf("%s: no audio or video", o.flv)
		}
		s.span = time.Duration(last)*time.Millisecond + 33*time.Millisecond
	} else {
		// 2 s of 30 fps video (a keyframe 8× a frame every 60 frames) and
		// 128 kbit/s audio in 1024-sample AAC frames at 44.1 kHz.
		if o.bitrate < 200_000 {
			return nil, errors.New("-bitrate must be at least 200000")
		}
		s.span = 2 * time.Second
		videoBytes := (o.bitrate - 128_000) / 8 * 2
		unit := videoBytes / (59 + 8)
		type ev struct {
			at   time.Duration
			typ  uint8
			size int
		}
		var evs []ev
		for i := 0; i < 60; i++ {
			size := unit
			if i == 0 {
				size = 8 * unit
			}
			evs = append(evs, ev{time.Duration(i) * time.Second / 30, flvtag.Video, size})
		}
		for i := 0; i < 86; i++ {
			evs = append(evs, ev{time.Duration(i) * 1024 * time.Second / 44100, flvtag.Audio, 128_000 / 8 * 1024 / 44100})
		}
		// merge by time
		for len(evs) > 0 {
			j := 0
			for i := range evs {
				if evs[i].at < evs[j].at {
					j = i
				}
			}
			e := evs[j]
			evs = append(evs[:j], evs[j+1:]...)
			body := make([]byte, e.size)
			for i := range body {
				body[i] = byte(i * 7)
			}
			s.msgs = append(s.msgs, chunk(e.typ, uint32(e.at.Milliseconds()), body, o.chunk))
			s.at = append(s.at, e.at)
			bytes += e.size
		}
	}
	s.bitrate = float64(bytes) * 8 / s.span.Seconds()
	return s, nil
}

// Point is one line of output.
type Point struct {
	N             int     `json:"n"`
	Writers       int     `json:"writers"`
	WindowMS      int     `json:"window_ms"`
	BitrateBPS    float64 `json:"bitrate_bps"`
	DurationS     float64 `json:"duration_s"`
	CPUPerS       float64 `json:"cpu_s_per_s"`
	CPUPer100     float64 `json:"cpu_s_per_s_per_100"`
	WritesPerS    float64 `json:"writes_per_s"`
	BytesPerS     float64 `json:"bytes_per_s"`
	MaxBehindMS   float64 `json:"max_behind_ms"` // worst lag of the writer behind the schedule
	ReaderCPUPerS float64 `json:"reader_cpu_s_per_s"`
}

// point runs one measurement with n sockets and merge window w: the
// sockets' readers are started (or, with -listen, accepted), written by
// the plain loop or, with -hub, by the hub, and measured between the
// warm-up's end and the point's.
func point(ctx context.Context, o options, st *stream, pk *packets, n int, w time.Duration) (Point, error) {
	var (
		conns     []net.Conn
		readerPID string // "": the readers are not ours to sample
		done      func()
		err       error
	)
	if o.listen != "" {
		var ln net.Listener
		if ln, err = net.Listen("tcp", o.listen); err != nil {
			return Point{}, err
		}
		conns, err = acceptPlayers(ln, n)
		ln.Close()
		done = func() { closeAll(conns) }
	} else {
		conns, readerPID, done, err = startReaders(o, n)
	}
	if err != nil {
		return Point{}, err
	}
	defer done()

	p := Point{N: n, Writers: o.writers, WindowMS: int(w.Milliseconds()), BitrateBPS: st.bitrate}
	var (
		cpu0, rcpu0        procstat.Sample
		mStart             time.Time
		readerErr, selfErr error
		start              = time.Now()
		warmEnd, end       = start.Add(o.warmup), start.Add(o.warmup + o.duration)
	)
	measure := func() {
		mStart = time.Now()
		cpu0, selfErr = procstat.Read("self")
		if readerPID != "" {
			rcpu0, readerErr = procstat.Read(readerPID)
		}
	}
	var ws written
	if pk != nil {
		p.Writers = runtime.GOMAXPROCS(0) // the hub's flushers at most
		ws, err = hubRun(ctx, pk, conns, w, warmEnd, end, measure)
	} else {
		ws, err = loopRun(ctx, st, split(conns, o.writers), w, start, warmEnd, end, measure)
	}
	if err != nil {
		return Point{}, err
	}
	el := time.Since(mStart).Seconds()
	if mStart.IsZero() || el <= 0 {
		return p, errors.New("interrupted before measuring")
	}
	cpu1, err := procstat.Read("self")
	if err != nil || selfErr != nil {
		return p, fmt.Errorf("sample own CPU: %v %v", err, selfErr)
	}
	p.DurationS = el
	p.CPUPerS = (cpu1.CPU - cpu0.CPU).Seconds() / el
	p.CPUPer100 = p.CPUPerS / float64(n) * 100
	p.WritesPerS = float64(ws.writes) / el
	p.BytesPerS = float64(ws.bytes) / el
	p.MaxBehindMS = float64(ws.behind.Microseconds()) / 1000
	if readerPID != "" && readerErr == nil {
		if r1, err := procstat.Read(readerPID); err == nil {
			p.ReaderCPUPerS = (r1.CPU - rcpu0.CPU).Seconds() / el
		}
	}
	return p, nil
}

// startReaders starts n readers in a child process (under taskset with
// -reader-cpus) and accepts their connections. done closes them, which
// ends the child, and waits for it.
func startReaders(o options, n int) (conns []net.Conn, pid string, done func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, err
	}
	defer ln.Close()
	self, err := os.Executable()
	if err != nil {
		return nil, "", nil, err
	}
	args := []string{self, "-reader", ln.Addr().String(), strconv.Itoa(n)}
	if o.readerCPUs != "" {
		args = append([]string{"taskset", "-c", o.readerCPUs}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, "", nil, fmt.Errorf("start readers: %w", err)
	}
	done = func() {
		closeAll(conns)
		_ = cmd.Wait() // the readers exit at EOF on every socket
	}
	conns, err = acceptN(ln, n, nil)
	if err != nil {
		_ = cmd.Process.Kill()
		done()
		return nil, "", nil, err
	}
	return conns, strconv.Itoa(cmd.Process.Pid), done, nil
}

// acceptN accepts n connections on ln within a minute, each through
// prepare when it is not nil; on an error it closes those accepted.
func acceptN(ln net.Listener, n int, prepare func(net.Conn) error) ([]net.Conn, error) {
	if tl, ok := ln.(*net.TCPListener); ok {
		_ = tl.SetDeadline(time.Now().Add(60 * time.Second))
	}
	conns := make([]net.Conn, 0, n)
	for len(conns) < n {
		c, err := ln.Accept()
		if err == nil && prepare != nil {
			if err = prepare(c); err != nil {
				c.Close()
			}
		}
		if err != nil {
			closeAll(conns)
			return nil, fmt.Errorf("accept reader %d of %d: %w", len(conns)+1, n, err)
		}
		conns = append(conns, c)
	}
	return conns, nil
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// written is what a run wrote while measured: the writes (batches), their
// bytes, and the worst lag of a write behind its due time beyond the
// window.
type written struct {
	writes, bytes int64
	behind        time.Duration
}

// loopRun is the plain loop: every message due by a window's end written
// to every socket of ps (each part from its own goroutine) from start
// until end; measure is called when warmEnd passes, and what was written
// from then on is returned. It stops at the first failed write.
func loopRun(ctx context.Context, st *stream, ps parts, w time.Duration, start, warmEnd, end time.Time, measure func()) (written, error) {
	var (
		ws                   written
		sockets              = int64(ps.sockets())
		measuring            bool
		bufs                 net.Buffers
		next, loop           int
		timer                = time.NewTimer(0)
		dueAt                = func(i, l int) time.Time { return start.Add(time.Duration(l)*st.span + st.at[i]) }
		bufsHeld, bytesInBuf int
	)
	defer timer.Stop()
	<-timer.C
	for ctx.Err() == nil {
		now := time.Now()
		if !measuring && now.After(warmEnd) {
			measuring = true
			measure()
			ws = written{}
		}
		if now.After(end) {
			break
		}
		// Collect every message due by now (the window's end).
		bufs, bytesInBuf, bufsHeld = bufs[:0], 0, 0
		for dueAt(next, loop).Before(now) || dueAt(next, loop).Equal(now) {
			if lag := now.Sub(dueAt(next, loop)); measuring && lag > ws.behind+w {
				ws.behind = lag - w
			}
			bufs = append(bufs, st.msgs[next])
			bytesInBuf += len(st.msgs[next])
			bufsHeld++
			if next++; next == len(st.msgs) {
				next, loop = 0, loop+1
			}
		}
		if bufsHeld > 0 {
			if err := ps.write(bufs); err != nil {
				return ws, fmt.Errorf("write: %w", err)
			}
			ws.writes += sockets
			ws.bytes += int64(bytesInBuf) * sockets
		}
		// Sleep to the next write: the next message's time (no window) or
		// the next window boundary holding a message.
		wake := dueAt(next, loop)
		if w > 0 {
			since := wake.Sub(start)
			wake = start.Add((since + w - 1) / w * w)
		}
		if d := time.Until(wake); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
			case <-timer.C:
			}
		}
	}
	return ws, nil
}

// parts are the sockets split into fixed parts, one per writer, each
// with its writev scratch.
type parts []part

type part struct {
	conns   []net.Conn
	scratch net.Buffers
}

// sockets is the number of sockets of all parts.
func (ps parts) sockets() int {
	n := 0
	for _, p := range ps {
		n += len(p.conns)
	}
	return n
}

// split divides conns into k parts of near-equal size, in order.
func split(conns []net.Conn, k int) parts {
	k = max(1, min(k, len(conns)))
	ps := make(parts, k)
	per := (len(conns) + k - 1) / k
	for i := range ps {
		ps[i].conns = conns[min(i*per, len(conns)):min((i+1)*per, len(conns))]
	}
	return ps
}

// write writes bufs to every socket, each part from its own goroutine (the
// first from this one), and returns the first error of any part: a part
// stops at its first failed write.
func (ps parts) write(bufs net.Buffers) error {
	if len(ps) == 1 {
		return ps[0].write(bufs)
	}
	errs := make([]error, len(ps))
	var wg sync.WaitGroup
	for i := 1; i < len(ps); i++ {
		wg.Go(func() { errs[i] = ps[i].write(bufs) })
	}
	errs[0] = ps[0].write(bufs)
	wg.Wait()
	return errors.Join(errs...)
}

func (p *part) write(bufs net.Buffers) error {
	for _, c := range p.conns {
		p.scratch = append(p.scratch[:0], bufs...)
		if _, err := p.scratch.WriteTo(c); err != nil {
			return err
		}
	}
	return nil
}

// readerChild runs the readers' child process when this process is one
// (started with -reader by startReaders) and reports whether it was.
func readerChild() bool {
	if len(os.Args) < 2 || os.Args[1] != "-reader" {
		return false
	}
	if err := reader(os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "floor reader:", err)
		os.Exit(1)
	}
	return true
}

// reader connects n sockets to addr and discards what arrives until each
// one is closed.
func reader(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: floor -reader ADDR N")
	}
	n, err := strconv.Atoi(args[1])
	if err != nil || n < 0 {
		return fmt.Errorf("bad count %q", args[1])
	}
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", args[0], 10*time.Second)
		if err != nil {
			return fmt.Errorf("dial %d of %d: %w", i+1, n, err)
		}
		wg.Go(func() {
			defer c.Close()
			_, _ = io.Copy(io.Discard, c)
		})
	}
	wg.Wait()
	return nil
}
