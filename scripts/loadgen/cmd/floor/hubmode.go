package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nareix/joy4/av"
	"github.com/nareix/joy4/format/flv"

	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/netx"
)

// packets is the -flv file demuxed, for -hub.
type packets struct {
	streams []av.CodecData
	pkts    []av.Packet
	span    time.Duration
}

func loadPackets(path string) (*packets, error) {
	if path == "" {
		return nil, errors.New("-hub needs -flv")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d := flv.NewDemuxer(f)
	p := &packets{}
	if p.streams, err = d.Streams(); err != nil {
		return nil, fmt.Errorf("demux %s: %w", path, err)
	}
	for {
		pkt, err := d.ReadPacket()
		if err != nil {
			break
		}
		p.pkts = append(p.pkts, pkt)
	}
	if len(p.pkts) == 0 {
		return nil, fmt.Errorf("%s: no packets", path)
	}
	p.span = p.pkts[len(p.pkts)-1].Time + 33*time.Millisecond
	return p, nil
}

// feed writes the packets to src at real-time pace, looping with rising
// timestamps, until ctx ends or a write fails.
func (p *packets) feed(ctx context.Context, src *hub.Source) error {
	start := time.Now()
	t := time.NewTimer(0)
	defer t.Stop()
	<-t.C
	for base := time.Duration(0); ; base += p.span {
		for _, pkt := range p.pkts {
			pkt.Time += base
			if d := time.Until(start.Add(pkt.Time)); d > 0 {
				t.Reset(d)
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
				}
			}
			if err := src.WritePacket(pkt); err != nil {
				return err
			}
		}
	}
}

// hubConn is one socket as the hub's DirectWriter: a non-blocking writev
// on its descriptor (TryWriteBuffers, as the edge's players), and the
// blocking write the reader's goroutine uses for the GOP and for what a
// full socket left.
type hubConn struct {
	c    net.Conn
	tryw *netx.TryWriter
	nb   net.Buffers
}

func newHubConn(c net.Conn) (*hubConn, error) {
	w := netx.NewTryWriter(c)
	if w == nil {
		return nil, errors.New("no socket to write to directly")
	}
	return &hubConn{c: c, tryw: w}, nil
}

func (hc *hubConn) TryWriteBuffers(v *net.Buffers) (int64, error) { return hc.tryw.TryWrite(v) }

func (hc *hubConn) write(b [][]byte) error {
	hc.nb = b
	_, err := netx.WriteBuffers(hc.c, &hc.nb)
	hc.nb = nil
	return err
}

// hubRun serves conns from a hub (media/hub with merge window w and no
// encoder: the FLV tags as they are, as to HTTP-FLV players) fed by pk at
// real time, until end; measured is called at warmEnd. It fails on the
// first failed write to a socket (a reader that went away).
func hubRun(ctx context.Context, pk *packets, conns []net.Conn, w time.Duration, warmEnd, end time.Time, measured func()) (written, error) {
	var maxTaken atomic.Int64
	h := hub.New("floor", hub.Config{
		MergeWindow: w,
		WriteDelay: func(taken, _ time.Duration) {
			for {
				m := maxTaken.Load()
				if int64(taken) <= m || maxTaken.CompareAndSwap(m, int64(taken)) {
					return
				}
			}
		},
	})
	defer h.Close()
	src, err := h.Publish(pk.streams, nil)
	if err != nil {
		return written{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		h.Close()
		wg.Wait()
	}()
	errs := make(chan error, len(conns)+1)
	wg.Go(func() {
		if err := pk.feed(ctx, src); err != nil {
			errs <- fmt.Errorf("feed: %w", err)
		}
	})
	// A GOP in the cache first, as a player joining a live stream finds it.
	time.Sleep(100 * time.Millisecond)
	for _, c := range conns {
		hc, err := newHubConn(c)
		if err != nil {
			return written{}, err
		}
		rd, err := h.NewReader()
		if err != nil {
			return written{}, err
		}
		wg.Go(func() {
			defer rd.Close()
			if err := rd.CopyDirect(ctx, hc, nil, hc.write); err != nil && ctx.Err() == nil {
				errs <- fmt.Errorf("player: %w", err)
			}
		})
	}
	sleep := func(until time.Time) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			return err
		case <-time.After(time.Until(until)):
			return nil
		}
	}
	if err := sleep(warmEnd); err != nil {
		return written{}, err
	}
	s0 := h.Stats()
	maxTaken.Store(0)
	measured()
	if err := sleep(end); err != nil {
		return written{}, err
	}
	s1 := h.Stats()
	return written{
		writes: (s1.DirectWrites + s1.ReaderWrites) - (s0.DirectWrites + s0.ReaderWrites),
		bytes:  s1.BytesOut - s0.BytesOut,
		behind: max(time.Duration(maxTaken.Load())-w, 0),
	}, nil
}

// acceptPlayers accepts n HTTP-FLV players on ln (within a minute; each
// request within 10 s) and answers each request with the start of an FLV
// stream, which the hub goes on with (-hub -listen).
func acceptPlayers(ln net.Listener, n int) ([]net.Conn, error) {
	head := []byte("HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nConnection: close\r\n\r\nFLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00")
	return acceptN(ln, n, func(c net.Conn) error {
		// The request: read until its blank line.
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var req []byte
		buf := make([]byte, 512)
		for !bytes.Contains(req, []byte("\r\n\r\n")) {
			m, err := c.Read(buf)
			if err != nil {
				return fmt.Errorf("read request: %w", err)
			}
			req = append(req, buf[:m]...)
		}
		_ = c.SetReadDeadline(time.Time{})
		_, err := c.Write(head)
		return err
	})
}
