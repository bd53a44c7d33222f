// Package web is the origin's HTTP port: HTTP-FLV (GET /{app}/{name}.flv),
// HLS from the HLS directory (GET /{app}/{name}.m3u8 and
// /{app}/{name}-{seq}.ts), the HTTP API (/api/v1/...), and index.html and
// crossdomain.xml from the HTTP root. Every response carries permissive
// CORS headers (players run on other origins). Stream names are validated
// on every path before anything touches the file system; nothing else of
// the directories is served.
package web

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livecluster/livecluster/streamkey"
)

// Options configure the handler.
type Options struct {
	// HLSDir holds <app>/<name>.m3u8 and <app>/<name>-<seq>.ts.
	HLSDir string
	// Root holds index.html and crossdomain.xml.
	Root string
	// FLV serves GET /{app}/{name}.flv.
	FLV http.Handler
	// API serves /api/...; nil: 404.
	API http.Handler
	// SegmentMaxAge is the Cache-Control max-age of segments.
	SegmentMaxAge time.Duration
	// Writing reports whether the segment seq of app/name is still being
	// written (hls.Manager.Writing): it is written under its final name,
	// and a request for it answers 404, not a partial file a cache would
	// keep for SegmentMaxAge. nil: nothing is checked.
	Writing func(app, name string, seq int64) bool
	// HLSRequests counts HLS requests by kind (playlist, segment).
	HLSRequests *prometheus.CounterVec
	// BytesOut is told the bytes of each HLS or static response.
	BytesOut func(n int64)
	// Authorize, when set, is asked before an HLS playlist or segment is
	// served; false means it answered the refusal itself.
	Authorize func(w http.ResponseWriter, r *http.Request, key streamkey.Key) bool
	// Carry returns the query parameters a playlist's segment URIs must
	// carry for request r (the credentials); nil: none.
	Carry func(r *http.Request) url.Values
	// Rewrite rewrites a playlist body to carry them (authz.RewritePlaylist).
	Rewrite func(body []byte, carry url.Values) []byte
	// NodeID names this origin in the playlist's streamkey.OriginHeader.
	NodeID string
	// Owned checks a playlist request's epoch (streamkey.EpochParam in
	// rawQuery) and returns the epoch the stream is published under here
	// (0: not published here); an error wrapping ErrNotOwner refuses the
	// request with 409 (published here under another epoch), any other
	// with 400. nil: nothing is checked.
	Owned func(key streamkey.Key, rawQuery string) (int64, error)
}

// ErrNotOwner is what Options.Owned wraps when the origin does not own the
// stream at the epoch the request names.
var ErrNotOwner = errors.New("not the owner at that epoch")

// PlaylistCacheControl lets a cache hold a live playlist for one second:
// players poll it about once per segment duration and must see new
// segments quickly.
const PlaylistCacheControl = "public, max-age=1"

// New returns the HTTP handler.
func New(o Options) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { o.static(w, r, "index.html") })
	mux.HandleFunc("GET /index.html", func(w http.ResponseWriter, r *http.Request) { o.static(w, r, "index.html") })
	mux.HandleFunc("GET /crossdomain.xml", func(w http.ResponseWriter, r *http.Request) { o.static(w, r, "crossdomain.xml") })
	mux.HandleFunc("GET /{app}/{file}", o.media)
	return cors(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The API has its own routes; a stream app may not be called "api".
		if strings.HasPrefix(r.URL.Path, "/api/") {
			if o.API == nil {
				http.NotFound(w, r)
				return
			}
			o.API.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	}))
}

func cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, HEAD, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "*")
		h.Set("Access-Control-Expose-Headers", "Content-Length, Content-Range")
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (o *Options) media(w http.ResponseWriter, r *http.Request) {
	app, file := r.PathValue("app"), r.PathValue("file")
	if err := streamkey.ValidatePart("app", app); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	switch {
	case strings.HasSuffix(file, ".flv"):
		if err := streamkey.ValidatePart("name", strings.TrimSuffix(file, ".flv")); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		o.FLV.ServeHTTP(w, r)
	case strings.HasSuffix(file, ".m3u8"):
		if err := streamkey.ValidatePart("name", strings.TrimSuffix(file, ".m3u8")); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if !o.authorize(w, r, app, strings.TrimSuffix(file, ".m3u8")) {
			return
		}
		o.count("playlist")
		if o.Owned != nil {
			key, err := streamkey.FromURL(app, strings.TrimSuffix(file, ".m3u8"), r.URL.Query())
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			epoch, err := o.Owned(key, r.URL.RawQuery)
			if err != nil {
				code := http.StatusBadRequest
				if errors.Is(err, ErrNotOwner) {
					code = http.StatusConflict
				}
				http.Error(w, err.Error(), code)
				return
			}
			h := w.Header()
			h.Set(streamkey.OriginHeader, o.NodeID)
			if epoch > 0 {
				h.Set(streamkey.EpochHeader, strconv.FormatInt(epoch, 10))
			}
			h.Add("Access-Control-Expose-Headers", streamkey.OriginHeader+", "+streamkey.EpochHeader)
		}
		if o.Carry != nil && o.Rewrite != nil {
			if carry := o.Carry(r); len(carry) > 0 {
				o.servePlaylist(w, r, o.HLSDir, app+"/"+file, carry)
				return
			}
		}
		w.Header().Set("Cache-Control", PlaylistCacheControl)
		o.serveFile(w, r, o.HLSDir, app+"/"+file, "application/vnd.apple.mpegurl")
	case strings.HasSuffix(file, ".ts"):
		base := strings.TrimSuffix(file, ".ts")
		i := strings.LastIndexByte(base, '-')
		if i < 0 || !digits(base[i+1:]) {
			http.Error(w, "not a segment name: want {name}-{seq}.ts", http.StatusBadRequest)
			return
		}
		if err := streamkey.ValidatePart("name", base[:i]); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if !o.authorize(w, r, app, base[:i]) {
			return
		}
		o.count("segment")
		if o.Writing != nil {
			// digits bounds it to 18 digits: no overflow.
			if seq, _ := strconv.ParseInt(base[i+1:], 10, 64); o.Writing(app, base[:i], seq) {
				http.NotFound(w, r)
				return
			}
		}
		w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(int(o.SegmentMaxAge.Seconds())))
		o.serveFile(w, r, o.HLSDir, app+"/"+file, "video/mp2t")
	default:
		http.NotFound(w, r)
	}
}

func (o *Options) authorize(w http.ResponseWriter, r *http.Request, app, name string) bool {
	if o.Authorize == nil {
		return true
	}
	key, err := streamkey.FromURL(app, name, r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return false
	}
	return o.Authorize(w, r, key)
}

// servePlaylist serves a playlist rewritten so that its segment URIs carry
// the request's credentials. Private: the body holds a player's token.
func (o *Options) servePlaylist(w http.ResponseWriter, r *http.Request, dir, name string, carry url.Values) {
	f, err := os.OpenInRoot(dir, name)
	var body []byte
	if err == nil {
		body, err = io.ReadAll(f)
		f.Close()
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || isEscape(err) {
			http.NotFound(w, r)
			return
		}
		http.Error(w, "cannot read file", http.StatusInternalServerError)
		return
	}
	body = o.Rewrite(body, carry)
	w.Header().Set("Cache-Control", "private, max-age=1")
	w.Header().Set("Content-Type", "application/vnd.apple.mpegurl")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method != http.MethodHead {
		n, _ := w.Write(body)
		if o.BytesOut != nil {
			o.BytesOut(int64(n))
		}
	}
}

func digits(s string) bool {
	if s == "" || len(s) > 18 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func (o *Options) count(kind string) {
	if o.HLSRequests != nil {
		o.HLSRequests.WithLabelValues(kind).Inc()
	}
}

func (o *Options) static(w http.ResponseWriter, r *http.Request, name string) {
	ct := "text/html; charset=utf-8"
	if strings.HasSuffix(name, ".xml") {
		ct = "text/xml; charset=utf-8"
	}
	o.serveFile(w, r, o.Root, name, ct)
}

// serveFile serves one regular file name inside dir (Range, HEAD and
// conditional requests included). name was built from validated parts
// only, and it is opened through os.OpenInRoot besides: no "..", absolute
// path or symbolic link leads outside dir (a symlink planted in the HLS
// volume answers 404, never the file it points to).
func (o *Options) serveFile(w http.ResponseWriter, r *http.Request, dir, name, contentType string) {
	f, err := os.OpenInRoot(dir, name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || isEscape(err) {
			w.Header().Del("Cache-Control") // a 404 of a live file must not stick
			http.NotFound(w, r)
			return
		}
		http.Error(w, "cannot read file", http.StatusInternalServerError)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		w.Header().Del("Cache-Control")
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", contentType)
	cw := &countingWriter{ResponseWriter: w}
	http.ServeContent(cw, r, "", st.ModTime(), f)
	if o.BytesOut != nil {
		o.BytesOut(cw.n)
	}
}

// isEscape reports os.Root's refusal of a path that leaves the root (its
// error is not exported; TestSymlinksNeverLeaveTheDirectory notices a
// change of its text as a 500).
func isEscape(err error) bool {
	var pe *fs.PathError
	return errors.As(err, &pe) && pe.Err != nil && pe.Err.Error() == "path escapes from parent"
}

type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// DefaultFiles are written into the HTTP root when missing.
var DefaultFiles = map[string]string{
	"index.html": `<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>livecluster origin</title></head>
<body>
<h1>livecluster origin</h1>
<p>This directory is served by a livecluster origin. Live streams:</p>
<ul>
<li>HTTP-FLV: <code>/{app}/{name}.flv</code></li>
<li>HLS: <code>/{app}/{name}.m3u8</code></li>
<li>RTMP: <code>rtmp://{host}/{app}/{name}</code></li>
<li>API: <a href="/api/v1/versions">/api/v1/versions</a>, <a href="/api/v1/summaries">/api/v1/summaries</a>,
<a href="/api/v1/streams">/api/v1/streams</a>, <a href="/api/v1/clients">/api/v1/clients</a></li>
</ul>
</body>
</html>
`,
	"crossdomain.xml": `<?xml version="1.0"?>
<cross-domain-policy>
    <allow-access-from domain="*" />
    <allow-http-request-headers-from domain="*" headers="*" />
</cross-domain-policy>
`,
}

// WriteDefaults writes each of DefaultFiles into root when it is missing and
// returns the names written. An existing file is never replaced, even one
// created concurrently by another origin sharing the volume: the content
// goes to a temporary file that is then hard-linked into place, which fails
// if the name exists (and readers never see a partial file).
func WriteDefaults(root string) ([]string, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("create http root %s: %w", root, err)
	}
	var written []string
	for _, name := range []string{"index.html", "crossdomain.xml"} {
		dst := filepath.Join(root, name)
		if _, err := os.Lstat(dst); err == nil {
			continue
		}
		tmp, err := os.CreateTemp(root, "."+name+".*.tmp")
		if err != nil {
			return written, fmt.Errorf("write %s: %w", dst, err)
		}
		_, werr := io.WriteString(tmp, DefaultFiles[name])
		if cerr := tmp.Close(); werr == nil {
			werr = cerr
		}
		if werr == nil {
			_ = os.Chmod(tmp.Name(), 0o644)
			werr = os.Link(tmp.Name(), dst)
		}
		os.Remove(tmp.Name())
		switch {
		case werr == nil:
			written = append(written, name)
		case errors.Is(werr, fs.ErrExist):
		default:
			return written, fmt.Errorf("write %s: %w", dst, werr)
		}
	}
	return written, nil
}
