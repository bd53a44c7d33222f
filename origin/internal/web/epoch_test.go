package web

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/livecluster/livecluster/streamkey"
)

// A playlist request naming an epoch is answered only when Owned accepts
// it: 409 for another owner's epoch, 400 for a malformed one, and the
// origin and epoch in the headers otherwise.
func TestPlaylistEpoch(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "live"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "live", "s.m3u8"), []byte("#EXTM3U\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	owned := func(key streamkey.Key, raw string) (int64, error) {
		switch raw {
		case "lc_epoch=7", "":
			return 7, nil
		case "lc_epoch=x":
			return 7, fmt.Errorf("%w: bad epoch", streamkey.ErrInvalid)
		}
		return 7, fmt.Errorf("origin o1 owns %s at epoch 7: %w", key, ErrNotOwner)
	}
	h := New(Options{HLSDir: dir, Root: dir, NodeID: "o1", Owned: owned})
	for _, tc := range []struct {
		query string
		code  int
	}{{"?lc_epoch=7", 200}, {"", 200}, {"?lc_epoch=8", 409}, {"?lc_epoch=x", 400}} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/live/s.m3u8"+tc.query, nil))
		if w.Code != tc.code {
			t.Errorf("%q: status %d, want %d (%s)", tc.query, w.Code, tc.code, w.Body)
			continue
		}
		if tc.code == 200 && (w.Header().Get(streamkey.EpochHeader) != "7" || w.Header().Get(streamkey.OriginHeader) != "o1") {
			t.Errorf("%q: headers %v, want origin o1 epoch 7", tc.query, w.Header())
		}
	}
}
