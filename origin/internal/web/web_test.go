package web

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHostilePathsNeverLeaveTheDirectory(t *testing.T) {
	dir := t.TempDir()
	hlsDir := filepath.Join(dir, "hls")
	os.MkdirAll(filepath.Join(hlsDir, "live"), 0o755)
	os.WriteFile(filepath.Join(hlsDir, "live", "s.m3u8"), []byte("#EXTM3U\n"), 0o644)
	os.WriteFile(filepath.Join(hlsDir, "live", "s-3.ts"), []byte("ts"), 0o644)
	os.WriteFile(filepath.Join(dir, "secret.m3u8"), []byte("TOP-SECRET-CONTENT"), 0o644)
	flv := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("flv")) })
	h := New(Options{HLSDir: hlsDir, Root: hlsDir, FLV: flv})

	for _, tc := range []struct {
		path string
		want int
	}{
		{"/live/s.m3u8", 200},
		{"/live/s-3.ts", 200},
		{"/live/s.flv", 200},
		{"/live/nope.m3u8", 404},
		{"/live/..%2fsecret.m3u8", 400},
		{"/..%2f/secret.m3u8", 400},
		{"/live/%2e%2e.m3u8", 400},
		{"/live/a..b.flv", 400},
		{"/live/s%00.m3u8", 400},
		{"/live/s-x.ts", 400},
		{"/live/s-..ts", 400},
		{"/live/s.txt", 404},
		{"/live/" + strings.Repeat("a", 129) + ".m3u8", 400},
	} {
		req := httptest.NewRequest("GET", "http://x"+tc.path, nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("GET %s: %d, want %d", tc.path, rec.Code, tc.want)
		}
		if strings.Contains(rec.Body.String(), "TOP-SECRET-CONTENT") {
			t.Errorf("GET %s leaked a file outside the directory", tc.path)
		}
		if rec.Header().Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("GET %s: no CORS header", tc.path)
		}
	}
}

// A symbolic link planted in the HLS directory (or the HTTP root) is never
// followed out of it: the file it points to is not served.
func TestSymlinksNeverLeaveTheDirectory(t *testing.T) {
	dir := t.TempDir()
	hlsDir := filepath.Join(dir, "hls")
	os.MkdirAll(filepath.Join(hlsDir, "live"), 0o755)
	os.WriteFile(filepath.Join(dir, "secret.m3u8"), []byte("TOP-SECRET-CONTENT"), 0o644)
	os.MkdirAll(filepath.Join(dir, "outside"), 0o755)
	os.WriteFile(filepath.Join(dir, "outside", "s.m3u8"), []byte("TOP-SECRET-CONTENT"), 0o644)
	for _, l := range []struct{ target, link string }{
		{filepath.Join(dir, "secret.m3u8"), filepath.Join(hlsDir, "live", "abs.m3u8")},
		{"../../secret.m3u8", filepath.Join(hlsDir, "live", "rel.m3u8")},
		{filepath.Join(dir, "outside"), filepath.Join(hlsDir, "evil")},
		{filepath.Join(dir, "secret.m3u8"), filepath.Join(hlsDir, "index.html")},
	} {
		if err := os.Symlink(l.target, l.link); err != nil {
			t.Fatal(err)
		}
	}
	// A link that stays inside is fine.
	os.WriteFile(filepath.Join(hlsDir, "live", "real.m3u8"), []byte("#EXTM3U\n"), 0o644)
	os.Symlink("real.m3u8", filepath.Join(hlsDir, "live", "inside.m3u8"))
	h := New(Options{HLSDir: hlsDir, Root: hlsDir})
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/live/abs.m3u8", 404},
		{"/live/rel.m3u8", 404},
		{"/evil/s.m3u8", 404},
		{"/index.html", 404},
		{"/live/inside.m3u8", 200},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "http://x"+tc.path, nil))
		if rec.Code != tc.want {
			t.Errorf("GET %s: %d, want %d", tc.path, rec.Code, tc.want)
		}
		if strings.Contains(rec.Body.String(), "TOP-SECRET-CONTENT") {
			t.Errorf("GET %s followed a symbolic link out of the directory", tc.path)
		}
	}
}

func TestWriteDefaultsNeverOverwrites(t *testing.T) {
	root := filepath.Join(t.TempDir(), "www")
	os.MkdirAll(root, 0o755)
	os.WriteFile(filepath.Join(root, "crossdomain.xml"), []byte("mine"), 0o644)
	written, err := WriteDefaults(root)
	if err != nil || len(written) != 1 || written[0] != "index.html" {
		t.Fatalf("WriteDefaults: %v %v", written, err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "crossdomain.xml")); string(b) != "mine" {
		t.Errorf("crossdomain.xml overwritten: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "index.html")); string(b) != DefaultFiles["index.html"] {
		t.Errorf("index.html: %q", b)
	}
	if written, err := WriteDefaults(root); err != nil || len(written) != 0 {
		t.Errorf("second WriteDefaults: %v %v", written, err)
	}
	entries, _ := os.ReadDir(root)
	if len(entries) != 2 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}
