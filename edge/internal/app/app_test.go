package app

import (
	"bufio"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

// dataHandler answers as the ServeMux with the one pattern "/" it
// replaced (redirecting an unclean path to its clean one), calls the route
// for clean paths, and does so without allocating. Over real servers:
// httptest.NewRequest would hide how the server parses the request line.
func TestDataHandler(t *testing.T) {
	var got []string
	route := func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.URL.Path)
		w.WriteHeader(http.StatusNoContent)
	}
	h := dataHandler(route)
	srv := httptest.NewServer(h)
	defer srv.Close()
	old := http.NewServeMux()
	old.HandleFunc("/", route)
	oldSrv := httptest.NewServer(old)
	defer oldSrv.Close()
	for _, c := range []struct {
		path  string
		clean bool
	}{
		{"/live/s.m3u8", true},
		{"/live/s-12.ts", true},
		{"/live/s.flv", true},
		{"/live//s.m3u8", false},
		{"/live/./s.flv", false},
		{"/live/x/../s.flv", false},
		{"/live/", false},
		{"*", false},
	} {
		got = nil
		want := rawGet(t, oldSrv.Listener.Addr().String(), c.path)
		got = nil
		resp := rawGet(t, srv.Listener.Addr().String(), c.path)
		if resp.StatusCode != want.StatusCode || resp.Header.Get("Location") != want.Header.Get("Location") {
			t.Errorf("GET %s: %d Location %q; the ServeMux: %d %q", c.path, resp.StatusCode, resp.Header.Get("Location"),
				want.StatusCode, want.Header.Get("Location"))
		}
		if c.clean && (len(got) != 1 || got[0] != c.path) {
			t.Errorf("GET %s: route got %q", c.path, got)
		}
	}
	r := httptest.NewRequest("GET", "/live/s.m3u8", nil)
	w := httptest.NewRecorder()
	if a := testing.AllocsPerRun(100, func() { got = got[:0]; h.ServeHTTP(w, r) }); a != 0 {
		t.Errorf("clean path: %v allocations per request, want 0", a)
	}
}

// rawGet sends one request line as is (a client would clean the path).
func rawGet(t *testing.T, addr, path string) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	resp.Body.Close()
	return resp
}
