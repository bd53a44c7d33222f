package rtmp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/nareix/joy4/format/flv/flvio"
)

// Dial connects to rawURL (rtmp://host[:port]/app/name[?query]), does the
// handshake and the connect command. ctx bounds the whole connection: when
// it ends the connection is closed and blocked calls return. Follow with
// Publish or Play.
func Dial(ctx context.Context, rawURL string, cfg Config) (*Conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("rtmp dial: %w", err)
	}
	if u.Scheme != "rtmp" {
		return nil, fmt.Errorf("rtmp dial %s: scheme must be rtmp", rawURL)
	}
	path := strings.TrimPrefix(u.Path, "/")
	app, name, ok := strings.Cut(path, "/")
	if !ok || app == "" || name == "" {
		return nil, fmt.Errorf("rtmp dial %s: want rtmp://host/app/name", rawURL)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "1935")
	}
	cfg = cfg.withDefaults()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, fmt.Errorf("rtmp dial %s: %w", host, err)
	}
	c := newConn(nc, cfg, slog.Default(), false)
	c.stopAfter = context.AfterFunc(ctx, func() { nc.Close() })
	c.accepted.Store(true)
	tcURL := "rtmp://" + u.Host + "/" + app
	c.req = parseRequest(app, name, tcURL)
	if u.RawQuery != "" {
		c.req.Query = u.RawQuery
		// The query rides on the connect's tcUrl too (as when an encoder
		// puts it on the app), so a server can judge the connect by it.
		tcURL += "?" + u.RawQuery
	}
	if err := c.clientHandshake(); err != nil {
		c.Close()
		return nil, fmt.Errorf("rtmp dial %s: %w", rawURL, ctxErr(ctx, err))
	}
	if err := c.setChunkSize(); err != nil {
		c.Close()
		return nil, fmt.Errorf("rtmp dial %s: %w", rawURL, ctxErr(ctx, err))
	}
	_, err = c.call(0, "connect", flvio.AMFMap{
		"app": app, "flashVer": "FMLE/3.0 (compatible; livecluster)", "tcUrl": tcURL,
		"fpad": false, "capabilities": 15.0, "audioCodecs": 3575.0, "videoCodecs": 252.0,
		"videoFunction": 1.0, "type": "nonprivate",
	})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("rtmp connect %s: %w", rawURL, ctxErr(ctx, err))
	}
	return c, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

func (c *Conn) streamName() string {
	if c.req.Query != "" {
		return c.req.Name + "?" + c.req.Query
	}
	return c.req.Name
}

// call sends a command and waits for its _result or _error, feeding media
// that arrives meanwhile to the demuxer.
func (c *Conn) call(sid uint32, name string, obj interface{}, args ...interface{}) ([]interface{}, error) {
	c.txn++
	txn := c.txn
	if err := c.writeCommand(csCommand, sid, append([]interface{}{name, txn, obj}, args...)...); err != nil {
		return nil, err
	}
	for {
		cmd, err := c.nextCommand()
		if err != nil {
			return nil, err
		}
		if cmd.txn != txn || (cmd.name != "_result" && cmd.name != "_error") {
			continue
		}
		if cmd.name == "_error" {
			code, _, desc := statusFields(cmd)
			return nil, fmt.Errorf("%s refused: %s: %s", name, code, desc)
		}
		return cmd.args, nil
	}
}

// nextCommand reads until a command arrives; an onStatus error fails.
func (c *Conn) nextCommand() (*command, error) {
	for {
		m, err := c.readMessage()
		if err != nil {
			return nil, err
		}
		switch m.typ {
		case msgCommandAMF0, msgCommandAMF3:
			cmd, err := parseCommand(m)
			if err != nil {
				return nil, err
			}
			if cmd.name == "onStatus" {
				if code, level, desc := statusFields(cmd); level == "error" {
					return nil, &StatusError{Code: code, Description: desc}
				}
			}
			return cmd, nil
		default:
			if err := c.pushMedia(m); err != nil && !errors.Is(err, ErrCodecChanged) {
				return nil, err
			}
		}
	}
}

func (c *Conn) createStream() error {
	res, err := c.call(0, "createStream", nil)
	if err != nil {
		return err
	}
	for _, v := range res {
		if f, ok := v.(float64); ok {
			c.streamID = uint32(f)
			return nil
		}
	}
	return errors.New("createStream: no stream id in _result")
}

// waitStatus reads until onStatus with code arrives.
func (c *Conn) waitStatus(code string) error {
	for {
		cmd, err := c.nextCommand()
		if err != nil {
			return err
		}
		if cmd.name == "onStatus" {
			if got, _, _ := statusFields(cmd); got == code {
				return nil
			}
		}
	}
}

// Publish asks to publish the dialed stream and waits for
// NetStream.Publish.Start. Then send WriteHeader and WritePacket (or WriteTags).
func (c *Conn) Publish() error {
	name := c.streamName()
	c.req.Publish = true
	_ = c.writeCommand(csCommand, 0, "releaseStream", c.txn+1, nil, name)
	c.txn++
	_ = c.writeCommand(csCommand, 0, "FCPublish", c.txn+1, nil, name)
	c.txn++
	if err := c.createStream(); err != nil {
		return fmt.Errorf("rtmp publish %s: %w", name, err)
	}
	if err := c.writeCommand(csCommand, c.streamID, "publish", 0.0, nil, name, "live"); err != nil {
		return fmt.Errorf("rtmp publish %s: %w", name, err)
	}
	if err := c.waitStatus("NetStream.Publish.Start"); err != nil {
		return fmt.Errorf("rtmp publish %s: %w", name, err)
	}
	// Drain what the server sends (acks, pings) so its writes never block;
	// an error from the server closes the connection and fails our writes
	// with the server's words. Close waits for this goroutine.
	//
	// The drain reads with no idle deadline: a server may say nothing to a
	// publisher for as long as it likes (ours sends no acknowledgements
	// unless asked), so silence is not a failure. Whether the server is
	// still there is decided by our writes and their WriteTimeout. With the
	// read deadline every forwarded publish died ReadTimeout after it began.
	c.cfg.ReadTimeout = 0
	_ = c.nc.SetReadDeadline(time.Time{})
	c.drainDone = make(chan struct{})
	go c.drainPublish()
	return nil
}

// drainPublish reads what the server sends a publisher until the
// connection ends or the server sends an onStatus error, whose code and
// description are kept for the failing writes (peerErr).
func (c *Conn) drainPublish() {
	defer close(c.drainDone)
	defer c.nc.Close()
	for {
		m, err := c.readMessage()
		if err != nil {
			return
		}
		if m.typ != msgCommandAMF0 && m.typ != msgCommandAMF3 {
			continue
		}
		cmd, err := parseCommand(m)
		if err != nil || cmd.name != "onStatus" {
			continue
		}
		if code, level, desc := statusFields(cmd); level == "error" {
			c.peerErr.Store(&StatusError{Code: code, Description: desc})
			return
		}
	}
}

// publishErr turns a failed write of a publishing client into the
// server's reason when it sent one: the status may still be in flight when
// the write fails, so it waits (briefly) for the drain to read it.
func (c *Conn) publishErr(err error) error {
	if c.drainDone == nil {
		return err
	}
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-c.drainDone:
	case <-t.C:
	}
	if se := c.peerErr.Load(); se != nil {
		return fmt.Errorf("rtmp publish ended by the server: %w", se)
	}
	return err
}

// Play asks to play the dialed stream and waits for NetStream.Play.Start.
// Then read with Streams and ReadPacket.
func (c *Conn) Play() error {
	name := c.streamName()
	if err := c.createStream(); err != nil {
		return fmt.Errorf("rtmp play %s: %w", name, err)
	}
	if err := c.writeCommand(csCommand, c.streamID, "play", 0.0, nil, name, -2000.0); err != nil {
		return fmt.Errorf("rtmp play %s: %w", name, err)
	}
	buf := make([]byte, 10)
	binary.BigEndian.PutUint16(buf, 3) // SetBufferLength
	binary.BigEndian.PutUint32(buf[2:], c.streamID)
	binary.BigEndian.PutUint32(buf[6:], 1000)
	if err := c.writeControl(msgUserControl, buf); err != nil {
		return fmt.Errorf("rtmp play %s: %w", name, err)
	}
	if err := c.waitStatus("NetStream.Play.Start"); err != nil {
		return fmt.Errorf("rtmp play %s: %w", name, err)
	}
	return nil
}
