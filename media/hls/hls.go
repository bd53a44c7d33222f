// Package hls writes live streams as HLS: MPEG-TS segments cut at keyframes
// and a sliding-window playlist, laid out as <dir>/<app>/<name>.m3u8 and
// <dir>/<app>/<name>-<seq>.ts.
//
// A segment is written under its final name: players learn of it from the
// playlist, which names it only once it is complete (nginx-rtmp does the
// same), and this origin's HTTP handler answers 404 for the segment still
// being written (Manager.Writing). A playlist is never seen half-written:
// each stream keeps two playlist files, <name>.m3u8 and <name>.m3u8.tmp,
// open; the next playlist is written into the .tmp one, and the two names
// are swapped atomically (renameat2 RENAME_EXCHANGE). On volumes that
// cannot swap names (NFS) it is written to <name>.m3u8.tmp and renamed
// over <name>.m3u8 instead.
//
// Why: creating a file is the expensive file operation here, and freeing
// one makes the next creations dearer still. ext4 without a journal skips,
// for every new inode, each free inode of the block group that was freed
// in the last one to five minutes, with a buffer-cache lookup per skipped
// inode; a rename over an existing playlist frees its old inode, so a
// temporary file per playlist and per segment cost two creations and two
// frees per segment (a creation took 0.2-1 ms at 200 streams). Now a
// segment costs one creation and, once it leaves the disk, one free; a
// playlist none.
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
	"sync/atomic"
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

	// root is cfg.Dir opened as an os.Root: the app directories are
	// created and opened through it, so no name, ".." or symbolic link
	// planted in the directory makes the writer touch a file outside it.
	root *os.Root
	// noExchange is set once the volume refused to swap two names: the
	// playlists are then written to a temporary file and renamed.
	noExchange atomic.Bool

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
	m         *Manager
	app, name string
	// dir is the app directory (cfg.Dir/app) opened once: the files are
	// created, renamed and removed by their base name in it, one system
	// call each instead of a walk from the top for every file.
	dir *appDir
	// plCur and plSpare are the open playlist files named <name>.m3u8 and
	// <name>.m3u8.tmp (-1: not open); see writePlaylist.
	plCur, plSpare int
	// writing is 1 + the number of the segment being written, 0 if none.
	writing      atomic.Int64
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
		dir, err := openAppDir(m.root, app)
		if err != nil {
			return nil, fmt.Errorf("hls %s: %w", key, err)
		}
		st = &state{m: m, app: app, name: name, dir: dir, plCur: -1, plSpare: -1}
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
	s := &Stream{m: m, st: st, app: app, name: name, key: key, streams: streams, fd: -1, disc: len(st.segs) > 0 || st.nextSeq > 0}
	for i, c := range streams {
		if c.Type() == av.H264 {
			s.hasVideo, s.videoIdx = true, i
		}
	}
	return s, nil
}

// Writing reports whether app/name's segment seq is being written: its file
// exists but is not complete (players learn of it from the playlist only
// once it is). An HTTP handler serving the directory answers 404 for it.
func (m *Manager) Writing(app, name string, seq int64) bool {
	m.mu.Lock()
	st := m.streams[app+"/"+name]
	m.mu.Unlock()
	return st != nil && st.writing.Load() == seq+1
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
		// A stream still being written closes its files when it ends:
		// closed under it, their numbers could be reused by other files.
		if !st.open {
			st.closePlaylistFiles()
			st.dir.close()
		}
	}
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
	fd       int    // the segment's file; -1: none open
	buf      []byte // the segment's bytes not written to fd yet
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
	if s.fd < 0 {
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
	err := writeFD(s.fd, s.buf)
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
	st.writing.Store(s.seq + 1)
	fd, err := st.dir.create(st.segName(s.seq))
	if err != nil {
		st.writing.Store(0)
		return fmt.Errorf("hls %s: create segment: %w", s.key, err)
	}
	s.fd, s.segStart = fd, t
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
	err := s.flush()
	if cerr := closeFD(s.fd); err == nil && cerr != nil {
		err = fmt.Errorf("hls %s: write segment %d: %w", s.key, s.seq, cerr)
	}
	s.fd = -1
	st.writing.Store(0)
	if err != nil {
		// Never listed: a partial segment must not stay under its name.
		st.dir.remove(st.segName(s.seq))
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
		if err := st.dir.remove(st.segName(st.gone[0])); err != nil && !errors.Is(err, os.ErrNotExist) {
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
	body := []byte(b.String())
	p := st.name + ".m3u8"
	if !st.m.noExchange.Load() {
		err := st.swapPlaylist(p, body)
		if err == nil {
			if ended {
				// The session is over: no open files or temporary name
				// until it is published again.
				st.closePlaylistFiles()
				st.dir.remove(p + ".tmp")
			}
			return nil
		}
		if exchangeUnsupported(err) {
			st.m.noExchange.Store(true)
			st.m.log.Info("hls: the volume cannot swap file names; playlists are renamed into place", "dir", st.m.cfg.Dir, "err", err)
		} else {
			st.m.log.Debug("hls: playlist swap failed; renaming into place", "stream", st.app+"/"+st.name, "err", err)
		}
		st.closePlaylistFiles()
	}
	// A new temporary file renamed over the playlist.
	fd, err := st.dir.create(p + ".tmp")
	if err == nil {
		err = writeFD(fd, body)
		if cerr := closeFD(fd); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = st.dir.rename(p+".tmp", p)
	}
	if err != nil {
		return fmt.Errorf("hls: write playlist: %w", err)
	}
	return nil
}

// swapPlaylist writes body into the open <name>.m3u8.tmp in place and swaps
// its name with <name>.m3u8, whose old content the .tmp name then holds for
// the next playlist: no file is created or freed. A reader that opened the
// playlist before the swap reads the old one whole unless it holds it open
// across the next playlist (a segment's duration) before reading. The
// first playlist of a stream is renamed into place, the .tmp file of the
// second is created once. On error the caller closes both files.
func (st *state) swapPlaylist(p string, body []byte) error {
	if st.plSpare < 0 {
		fd, err := st.dir.openRW(p + ".tmp")
		if err != nil {
			return err
		}
		st.plSpare = fd
	}
	if err := rewriteFD(st.plSpare, body); err != nil {
		return err
	}
	if st.plCur < 0 {
		// Nothing of ours under the name yet (a file an earlier process
		// left is replaced).
		if err := st.dir.rename(p+".tmp", p); err != nil {
			return err
		}
	} else if err := st.dir.exchange(p+".tmp", p); err != nil {
		return err
	}
	st.plCur, st.plSpare = st.plSpare, st.plCur
	return nil
}

// closePlaylistFiles closes the open playlist files, if any.
func (st *state) closePlaylistFiles() {
	for _, fd := range []*int{&st.plCur, &st.plSpare} {
		if *fd >= 0 {
			closeFD(*fd)
			*fd = -1
		}
	}
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
	if s.fd >= 0 {
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
	} else {
		st.closePlaylistFiles()
		st.dir.close()
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
	st.closePlaylistFiles()
	paths := []string{st.name + ".m3u8", st.name + ".m3u8.tmp"}
	for _, sg := range st.segs {
		paths = append(paths, st.segName(sg.seq))
	}
	for _, seq := range st.gone {
		paths = append(paths, st.segName(seq))
	}
	m.mu.Unlock()
	for _, p := range paths {
		st.dir.remove(p)
	}
	st.dir.close()
	m.log.Debug("hls: disposed", "stream", key)
}
