package partition

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/livecluster/livecluster/streamkey"
)

// source is who served a piece of media: the origin and its epoch.
type source struct {
	Origin string
	Epoch  int64
}

// frame is one video tag a watcher received, with the source named by the
// last onMetaData (or the response headers before the first one).
type frame struct {
	At  time.Time
	Src source
}

// watcher is one HTTP-FLV player of the edge that records, for every video
// tag, when it arrived and which origin and epoch it came from (the
// X-Livecluster-* headers of the response, then the livecluster_origin /
// livecluster_epoch fields of every onMetaData the edge sends, again after
// each splice).
type watcher struct {
	url string

	mu      sync.Mutex
	frames  []frame
	splices []frame // every onMetaData: when, and the source it names
	err     error
	ended   time.Time
}

// run plays until ctx ends (a clean end) or the stream breaks (err).
func (w *watcher) run(ctx context.Context) {
	err := w.play(ctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ended = time.Now()
	if ctx.Err() == nil {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		w.err = err
	}
}

func (w *watcher) play(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("HTTP-FLV %s: %w", w.url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP-FLV %s: %s", w.url, resp.Status)
	}
	cur := source{Origin: resp.Header.Get(streamkey.OriginHeader)}
	cur.Epoch, _ = strconv.ParseInt(resp.Header.Get(streamkey.EpochHeader), 10, 64)
	r := bufio.NewReaderSize(resp.Body, 64<<10)
	hdr := make([]byte, 13) // FLV header (9) + PreviousTagSize0 (4)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return fmt.Errorf("HTTP-FLV header: %w", err)
	}
	if string(hdr[:3]) != "FLV" {
		return errors.New("HTTP-FLV: not an FLV stream")
	}
	th := make([]byte, 11)
	for {
		if _, err := io.ReadFull(r, th); err != nil {
			return fmt.Errorf("HTTP-FLV tag: %w", err)
		}
		size := int(th[1])<<16 | int(th[2])<<8 | int(th[3])
		body := make([]byte, size+4) // data + PreviousTagSize
		if _, err := io.ReadFull(r, body); err != nil {
			return fmt.Errorf("HTTP-FLV tag body: %w", err)
		}
		now := time.Now()
		switch th[0] & 0x1f {
		case 18: // script data: onMetaData
			if o, ok := amfField(body[:size], streamkey.OriginMeta); ok {
				cur.Origin = o
			}
			if e, ok := amfField(body[:size], streamkey.EpochMeta); ok {
				cur.Epoch, _ = strconv.ParseInt(e, 10, 64)
			}
			w.mu.Lock()
			w.splices = append(w.splices, frame{At: now, Src: cur})
			w.mu.Unlock()
		case 9: // video
			w.mu.Lock()
			w.frames = append(w.frames, frame{At: now, Src: cur})
			w.mu.Unlock()
		}
	}
}

// amfField finds the property name in AMF0 script data and returns its
// value as text (AMF0 string or number): the drill needs two fields, not a
// full decoder.
func amfField(b []byte, name string) (string, bool) {
	key := binary.BigEndian.AppendUint16(nil, uint16(len(name)))
	key = append(key, name...)
	i := bytes.Index(b, key)
	if i < 0 {
		return "", false
	}
	v := b[i+len(key):]
	switch {
	case len(v) >= 3 && v[0] == 0x02: // string
		n := int(binary.BigEndian.Uint16(v[1:3]))
		if len(v) < 3+n {
			return "", false
		}
		return string(v[3 : 3+n]), true
	case len(v) >= 9 && v[0] == 0x00: // number
		f := math.Float64frombits(binary.BigEndian.Uint64(v[1:9]))
		return strconv.FormatInt(int64(f), 10), true
	}
	return "", false
}

// result returns what the watcher saw.
func (w *watcher) result() (frames, splices []frame, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]frame(nil), w.frames...), append([]frame(nil), w.splices...), w.err
}
