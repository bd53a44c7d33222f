// Package hls writes live streams as HLS: MPEG-TS segments cut at keyframes
// and a sliding-window playlist, laid out as <dir>/<app>/<name>.m3u8 and
// <dir>/<app>/<name>-<seq>.ts. Segments and playlists are written to a
// temporary file and renamed, so readers of a shared volume never see a
// partial file.
//
// The MPEG-TS muxer (ts.go) lives as long as the stream's state, so
// continuity counters run on across segment joins. A segment is built in
// memory and written to its file in blocks of 64 KiB: no write per TS
// packet.
package hls

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nareix/joy4/av"

	"github.com/livecluster/livecluster/streamkey"
)

// ErrBusy is returned by Open while the stream is already being written.
var ErrBusy = errors.New("hls: stream already open")

// Config configures the segmenter. Zero fields take the defaults.
type Config struct {
	Dir      string        // root directory (required)
	Fragment time.Duration // minimum segment duration, cut at the next keyframe (2 s)
	Window   int           // segments in the playlist (6)
	// Keep is how many segments stay on disk after leaving the playlist,
	// for players that fetched the previous playlist (2; negative: 0).
	Keep int
	// Dispose removes the files of an unpublished stream after this long (30 s).
	Dispose time.Duration
	Logger  *slog.Logger
	// Clock is the wall clock the first number of a claim is derived from
	// (time.Now); tests set it.
	Clock func() time.Time
}

// Manager owns the HLS state of every stream under one directory.
type Manager struct {
	cfg Config
	log *slog.Logger

	// root is cfg.Dir opened as an os.Root: every file is created,
	// renamed and removed through it, so no name, ".." or symbolic link
	// planted in the directory makes the writer touch a file outside it.
	root *os.Root

	mu      sync.Mutex
	streams map[string]*state
	closed  bool
}

// New validates cfg and creates the directory.
func New(cfg Config) (*Manager, error) {
	if cfg.Dir == "" {
		return nil, errors.New("hls: no directory configured")
	}
	if cfg.Fragment <= 0 {
		cfg.Fragment = 2 * time.Second
	}
	if cfg.Window <= 0 {
		cfg.Window = 6
	}
	if cfg.Keep == 0 {
		cfg.Keep = 2
	} else if cfg.Keep < 0 {
		cfg.Keep = 0
	}
	if cfg.Dispose <= 0 {
		cfg.Dispose = 30 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("hls: create %s: %w", cfg.Dir, err)
	}
	root, err := os.OpenRoot(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("hls: open %s: %w", cfg.Dir, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Manager{cfg: cfg, log: log, root: root, streams: map[string]*state{}}, nil
}

type segment struct {
	seq  int64
	dur  time.Duration
	disc bool // EXT-X-DISCONTINUITY before it
}

// state is what survives an unpublish until dispose: sequence numbers and
// the playlist, so a republish continues it.
type state struct {
	dir, name string
	// root is the app directory (cfg.Dir/dir) opened once: the files are
	// created, renamed and removed by their base name in it, one system
	// call each instead of a walk from the top for every file.
	root         *os.Root
	muxer        tsMuxer
	nextSeq      int64
	segs         []segment // in the playlist
	gone         []int64   // left the playlist, still on disk
	discSeq      int       // discontinuities that left the playlist
	end          time.Duration
	open         bool
	disposeTimer *time.Timer
}

// segName is a segment's file name in the app directory.
func (st *state) segName(seq int64) string {
	return st.name + "-" + strconv.FormatInt(seq, 10) + ".ts"
}

// checkPart refuses anything that could escape the directory, even though
// callers pass validated keys.
func checkPart(what, s string) error {
	if strings.ContainsAny(s, "/\\") || strings.Contains(s, "..") {
		return fmt.Errorf("hls: %s %q may not contain '/', '\\' or '..'", what, s)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("hls: %s %q contains a control character", what, s)
		}
	}
	return streamkey.ValidatePart(what, s)
}

// Open starts (or, after an unpublish, continues with a discontinuity) the
// HLS output of app/name.
func (m *Manager) Open(app, name string, streams []av.CodecData) (*Stream, error) {
	if err := checkPart("app", app); err != nil {
		return nil, err
	}
	if err := checkPart("name", name); err != nil {
		return nil, err
	}
	for _, c := range streams {
		if c.Type() != av.H264 && c.Type() != av.AAC {
			return nil, fmt.Errorf("hls %s/%s: codec %v not supported", app, name, c.Type())
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errors.New("hls: manager closed")
	}
	key := app + "/" + name
	st := m.streams[key]
	if st == nil {
		if err := m.root.MkdirAll(app, 0o755); err != nil {
			return nil, fmt.Errorf("hls %s: %w", key, err)
		}
		sub, err := m.root.OpenRoot(app)
		if err != nil {
			return nil, fmt.Errorf("hls %s: %w", key, err)
		}
		st = &state{dir: app, name: name, root: sub}
		m.streams[key] = st
	}
	if st.open {
		return nil, fmt.Errorf("%w: %s", ErrBusy, key)
	}
	if st.disposeTimer != nil {
		st.disposeTimer.Stop()
		st.disposeTimer = nil
	}
	st.open = true
	s := &Stream{m: m, st: st, app: app, name: name, key: key, streams: streams, disc: len(st.segs) > 0 || st.nextSeq > 0}
	for i, c := range streams {
		if c.Type() == av.H264 {
			s.hasVideo, s.videoIdx = true, i
		}
	}
	return s, nil
}

// Close stops pending disposals; files stay on disk.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	for _, st := range m.streams {
		if st.disposeTimer != nil {
			st.disposeTimer.Stop()
		}
		st.root.Close()
	}
	// A segment still being written after Close fails with an error.
	m.root.Close()
}

// Stream writes one publish session. Not safe for concurrent use.
type Stream struct {
	m        *Manager
	st       *state
	app      string
	name     string
	key      string
	streams  []av.CodecData
	hasVideo bool
	videoIdx int
	disc     bool // next segment follows a republish
	headerOK bool // muxer has this session's streams

	started  bool
	base     time.Duration // first packet time of this session
	offset   time.Duration // maps this session's time onto the stream timeline
	last     time.Duration
	f        *os.File
	buf      []byte // the segment's bytes not written to f yet
	seq      int64
	numbered bool // this session's first segment has its number
	segStart time.Duration
	closed   bool
}

// WritePacket adds a packet, cutting a segment at a keyframe once Fragment
// has elapsed.
func (s *Stream) WritePacket(pkt av.Packet) error {
	if s.closed {
		return errors.New("hls: stream closed")
	}
	if int(pkt.Idx) < 0 || int(pkt.Idx) >= len(s.streams) {
		return fmt.Errorf("hls %s: packet for stream %d", s.key, pkt.Idx)
	}
	if !s.started {
		s.started = true
		s.base = pkt.Time
		// The timeline continues across republishes, one frame after the end.
		s.offset = s.st.end - pkt.Time
		if s.st.end > 0 {
			s.offset += 40 * time.Millisecond
		}
	}
	t := pkt.Time + s.offset
	if t < s.last-10*time.Second {
		t = s.last // a publisher resetting its clock; stay monotonic
	}
	isKey := !s.hasVideo || (int(pkt.Idx) == s.videoIdx && pkt.IsKeyFrame)
	if s.f == nil {
		if !isKey {
			return nil // a segment must start with a keyframe
		}
		if err := s.openSegment(t); err != nil {
			return err
		}
	} else if isKey && t-s.segStart >= s.m.cfg.Fragment {
		if err := s.closeSegment(t, false); err != nil {
			return err
		}
		if err := s.openSegment(t); err != nil {
			return err
		}
	}
	if t > s.last {
		s.last = t
	}
	pkt.Time = t
	var err error
	if s.buf, err = s.st.muxer.appendPacket(s.buf, pkt); err != nil {
		return fmt.Errorf("hls %s: mux: %w", s.key, err)
	}
	if len(s.buf) >= writeBlock {
		return s.flush()
	}
	return nil
}

// writeBlock is how much of a segment is gathered before it is written.
const writeBlock = 64 << 10

// flush writes what is buffered of the segment to its file.
func (s *Stream) flush() error {
	if len(s.buf) == 0 {
		return nil
	}
	_, err := s.f.Write(s.buf)
	s.buf = s.buf[:0]
	if err != nil {
		return fmt.Errorf("hls %s: write segment %d: %w", s.key, s.seq, err)
	}
	return nil
}

func (s *Stream) openSegment(t time.Duration) error {
	st := s.st
	if !s.numbered {
		// The first segment of a session (a claim): continue above any
		// earlier owner's numbers (StartSeq). A jump cannot be written into
		// the playlist (numbers are MEDIA-SEQUENCE + index), so the earlier
		// segments leave it; they stay on disk for Keep more segments.
		s.numbered = true
		start := StartSeq(st.nextSeq, s.m.cfg.Clock(), s.m.cfg.Fragment)
		if start != st.nextSeq {
			for _, sg := range st.segs {
				if sg.disc {
					st.discSeq++
				}
				st.gone = append(st.gone, sg.seq)
			}
			if len(st.segs) > 0 {
				s.disc = true
			}
			st.segs = nil
		}
		st.nextSeq = start
	}
	s.seq = st.nextSeq
	st.nextSeq++
	f, err := st.root.Create(st.segName(s.seq) + ".tmp")
	if err != nil {
		return fmt.Errorf("hls %s: create segment: %w", s.key, err)
	}
	s.f, s.segStart = f, t
	if s.buf == nil {
		s.buf = make([]byte, 0, writeBlock+8<<10)
	}
	if !s.headerOK {
		s.headerOK = true
		if err := st.muxer.setStreams(s.streams); err != nil {
			return fmt.Errorf("hls %s: %w", s.key, err)
		}
	}
	s.buf = st.muxer.appendPATPMT(s.buf[:0])
	return nil
}

// closeSegment publishes the current segment ending at end.
func (s *Stream) closeSegment(end time.Duration, final bool) error {
	st := s.st
	f := s.f
	s.f = nil
	s.f = f
	err := s.flush()
	s.f = nil
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("hls %s: write segment %d: %w", s.key, s.seq, cerr)
	}
	tmp := st.segName(s.seq) + ".tmp"
	if err == nil {
		if err = st.root.Rename(tmp, st.segName(s.seq)); err != nil {
			err = fmt.Errorf("hls %s: write segment %d: %w", s.key, s.seq, err)
		}
	}
	if err != nil {
		st.root.Remove(tmp)
		return err
	}
	st.segs = append(st.segs, segment{seq: s.seq, dur: end - s.segStart, disc: s.disc})
	s.disc = false
	st.end = end
	for len(st.segs) > s.m.cfg.Window {
		if st.segs[0].disc {
			st.discSeq++
		}
		st.gone = append(st.gone, st.segs[0].seq)
		st.segs = st.segs[1:]
	}
	for len(st.gone) > s.m.cfg.Keep {
		if err := st.root.Remove(st.segName(st.gone[0])); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.m.log.Warn("hls: remove old segment", "stream", s.key, "err", err)
		}
		st.gone = st.gone[1:]
	}
	return st.writePlaylist(final)
}

func (st *state) writePlaylist(ended bool) error {
	var maxDur time.Duration
	for _, sg := range st.segs {
		maxDur = max(maxDur, sg.dur)
	}
	target := int(math.Ceil(maxDur.Round(time.Millisecond).Seconds()))
	target = max(target, 1)
	var b strings.Builder
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:3\n")
	fmt.Fprintf(&b, "#EXT-X-TARGETDURATION:%d\n", target)
	first := st.nextSeq
	if len(st.segs) > 0 {
		first = st.segs[0].seq
	}
	fmt.Fprintf(&b, "#EXT-X-MEDIA-SEQUENCE:%d\n", first)
	if st.discSeq > 0 {
		fmt.Fprintf(&b, "#EXT-X-DISCONTINUITY-SEQUENCE:%d\n", st.discSeq)
	}
	for _, sg := range st.segs {
		if sg.disc {
			b.WriteString("#EXT-X-DISCONTINUITY\n")
		}
		fmt.Fprintf(&b, "#EXTINF:%.3f,\n%s-%d.ts\n", sg.dur.Seconds(), st.name, sg.seq)
	}
	if ended {
		b.WriteString("#EXT-X-ENDLIST\n")
	}
	p := st.name + ".m3u8"
	if err := st.root.WriteFile(p+".tmp", []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("hls: write playlist: %w", err)
	}
	if err := st.root.Rename(p+".tmp", p); err != nil {
		return fmt.Errorf("hls: write playlist: %w", err)
	}
	return nil
}

// Close ends the session (unpublish): the last segment is published, the
// playlist gets EXT-X-ENDLIST and the files are removed after Dispose
// unless the stream is opened again.
func (s *Stream) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.f != nil {
		end := s.last
		if end <= s.segStart {
			end = s.segStart + time.Millisecond
		}
		err = s.closeSegment(end, true)
	} else if len(s.st.segs) > 0 {
		err = s.st.writePlaylist(true)
	}
	m := s.m
	m.mu.Lock()
	defer m.mu.Unlock()
	st := s.st
	st.open = false
	if !m.closed {
		st.disposeTimer = time.AfterFunc(m.cfg.Dispose, func() { m.dispose(s.key, st) })
	}
	return err
}

// dispose removes the files of an unpublished stream. The removals run
// outside m.mu: on a hung volume they may block, and Open (on the publish
// path of every stream) takes m.mu.
func (m *Manager) dispose(key string, st *state) {
	m.mu.Lock()
	if m.closed || st.open || m.streams[key] != st {
		m.mu.Unlock()
		return
	}
	delete(m.streams, key)
	paths := []string{st.name + ".m3u8"}
	for _, sg := range st.segs {
		paths = append(paths, st.segName(sg.seq))
	}
	for _, seq := range st.gone {
		paths = append(paths, st.segName(seq))
	}
	m.mu.Unlock()
	for _, p := range paths {
		st.root.Remove(p)
	}
	st.root.Close()
	m.log.Debug("hls: disposed", "stream", key)
}
