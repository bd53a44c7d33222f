// Package api is the origin's HTTP API, shaped like SRS's so SRS users find
// their way: every answer is JSON with "code" (0 on success) and "server"
// (the node id), and the per-endpoint shapes of SRS:
//
//	GET    /api/v1/versions       {"code":0,"server":..,"data":{"major":..,"minor":..,"revision":..,"version":..}}
//	GET    /api/v1/summaries      {"code":0,"server":..,"data":{"ok":true,"now_ms":..,"self":{..},"system":{..},"livecluster":{..}}}
//	GET    /api/v1/streams        {"code":0,"server":..,"streams":[..]}   (?start=&count=)
//	GET    /api/v1/streams/{id}   {"code":0,"server":..,"stream":{..}}
//	GET    /api/v1/clients        {"code":0,"server":..,"clients":[..]}   (?start=&count=)
//	GET    /api/v1/clients/{id}   {"code":0,"server":..,"client":{..}}
//	DELETE /api/v1/clients/{id}   {"code":0,"server":..}  kicks a publisher or player
//
// Unknown ids answer HTTP 404 with SRS's not-found code 2049, so both
// status-checking and code-checking clients see the failure.
package api

import (
	"encoding/json"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/livecluster/livecluster/origin/internal/clients"
)

// CodeNotFound is SRS's ERROR_RTMP_CLIENT_NOT_FOUND / stream-not-found code.
const CodeNotFound = 2049

// Video describes a stream's video codec.
type Video struct {
	Codec   string `json:"codec"`
	Profile string `json:"profile"`
	Level   string `json:"level"`
	Width   int    `json:"width"`
	Height  int    `json:"height"`
}

// Audio describes a stream's audio codec.
type Audio struct {
	Codec      string `json:"codec"`
	SampleRate int    `json:"sample_rate"`
	Channel    int    `json:"channel"`
	Profile    string `json:"profile"`
}

// Owner is the stream's ownership at the OCM (livecluster's addition).
type Owner struct {
	Epoch       int64  `json:"epoch"`
	PublishPath string `json:"publish_path"`
	ForwardedBy string `json:"forwarded_by,omitempty"`
	Since       string `json:"since,omitempty"`
}

// Stream is one published stream, as SRS shows it.
type Stream struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Vhost     string `json:"vhost"`
	App       string `json:"app"`
	TcURL     string `json:"tcUrl"`
	URL       string `json:"url"`
	LiveMs    int64  `json:"live_ms"`
	Clients   int    `json:"clients"`
	Frames    int64  `json:"frames"`
	SendBytes int64  `json:"send_bytes"`
	RecvBytes int64  `json:"recv_bytes"`
	Kbps      Kbps   `json:"kbps"`
	Publish   struct {
		Active bool   `json:"active"`
		CID    string `json:"cid"`
	} `json:"publish"`
	Video   *Video `json:"video"`
	Audio   *Audio `json:"audio"`
	Owner   Owner  `json:"owner"`
	Skipped int64  `json:"slow_readers_skipped"`
	Dropped int64  `json:"slow_readers_dropped"`
}

// Kbps are average rates (since the stream or client started).
type Kbps struct {
	Recv30s int64 `json:"recv_30s"`
	Send30s int64 `json:"send_30s"`
}

// Client is one connection, as SRS shows it.
type Client struct {
	ID        string  `json:"id"`
	Vhost     string  `json:"vhost"`
	Stream    string  `json:"stream"`
	IP        string  `json:"ip"`
	PageURL   string  `json:"pageUrl"`
	SwfURL    string  `json:"swfUrl"`
	TcURL     string  `json:"tcUrl"`
	URL       string  `json:"url"`
	Name      string  `json:"name"`
	Type      string  `json:"type"`
	Publish   bool    `json:"publish"`
	Alive     float64 `json:"alive"`
	SendBytes int64   `json:"send_bytes"`
	RecvBytes int64   `json:"recv_bytes"`
	Kbps      Kbps    `json:"kbps"`
}

// Status is the node's own state for summaries.
type Status struct {
	NodeID     string `json:"node_id"`
	Registered bool   `json:"ocm_registered"`
	Draining   bool   `json:"draining"`
	// Fenced says why the origin does not act as owner now (its lease may
	// be gone); empty when it does.
	Fenced     string  `json:"fenced,omitempty"`
	Streams    int     `json:"streams"`
	Publishers int     `json:"publishers"`
	Players    int     `json:"players"`
	CPUCores   float64 `json:"cpu_cores"`
}

// API serves the endpoints.
type API struct {
	NodeID  string
	Version string
	Start   time.Time
	Clients *clients.Registry
	// Streams returns the published streams.
	Streams func() []Stream
	// Status returns the node's state.
	Status func() Status
	// StreamOf maps a client to its stream id (the publisher's client id).
	StreamOf func(s clients.Snapshot) string
}

// Register adds the routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/versions", a.versions)
	mux.HandleFunc("GET /api/v1/summaries", a.summaries)
	mux.HandleFunc("GET /api/v1/streams", a.streams)
	mux.HandleFunc("GET /api/v1/streams/{id}", a.stream)
	mux.HandleFunc("GET /api/v1/clients", a.clients)
	mux.HandleFunc("GET /api/v1/clients/{id}", a.client)
	mux.HandleFunc("DELETE /api/v1/clients/{id}", a.kick)
}

// Handler returns a handler with the routes and a JSON 404 for the rest of
// /api/.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	a.Register(mux)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		a.write(w, http.StatusNotFound, map[string]any{"code": http.StatusNotFound, "message": "no such API: " + r.Method + " " + r.URL.Path})
	})
	return mux
}

func (a *API) write(w http.ResponseWriter, status int, body map[string]any) {
	if _, ok := body["server"]; !ok {
		body["server"] = a.NodeID
	}
	if _, ok := body["pid"]; !ok {
		body["pid"] = strconv.Itoa(os.Getpid())
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(body)
}

func (a *API) ok(w http.ResponseWriter, body map[string]any) {
	body["code"] = 0
	a.write(w, http.StatusOK, body)
}

func (a *API) versions(w http.ResponseWriter, _ *http.Request) {
	major, minor, rev := parseVersion(a.Version)
	a.ok(w, map[string]any{"data": map[string]any{
		"major": major, "minor": minor, "revision": rev, "version": a.Version,
	}})
}

// parseVersion reads "v1.2.3" (or "1.2.3-rc1"); anything else is 0.0.0.
func parseVersion(v string) (major, minor, rev int) {
	v = strings.TrimPrefix(v, "v")
	v, _, _ = strings.Cut(v, "-")
	parts := strings.SplitN(v, ".", 3)
	nums := []*int{&major, &minor, &rev}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			return 0, 0, 0
		}
		*nums[i] = n
	}
	return major, minor, rev
}

func (a *API) summaries(w http.ResponseWriter, _ *http.Request) {
	now := time.Now()
	wd, _ := os.Getwd()
	st := a.Status()
	a.ok(w, map[string]any{"data": map[string]any{
		"ok":     true,
		"now_ms": now.UnixMilli(),
		"self": map[string]any{
			"version": a.Version, "pid": os.Getpid(), "ppid": os.Getppid(), "argv": strings.Join(os.Args, " "),
			"cwd": wd, "mem_kbyte": rssKB(), "cpu_percent": st.CPUCores * 100,
			"srs_uptime": int64(now.Sub(a.Start).Seconds()),
		},
		"system": map[string]any{
			"cpus": runtime.NumCPU(), "cpus_online": runtime.NumCPU(), "goroutines": runtime.NumGoroutine(),
		},
		"livecluster": st,
	}})
}

// rssKB reads the resident set size from /proc (0 where there is none).
func rssKB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// page applies SRS's ?start=&count= (count defaults to 100, at most 1000).
func page[T any](r *http.Request, items []T) []T {
	start, _ := strconv.Atoi(r.URL.Query().Get("start"))
	count, err := strconv.Atoi(r.URL.Query().Get("count"))
	if err != nil || count <= 0 {
		count = 100
	}
	count = min(count, 1000)
	start = max(start, 0)
	if start >= len(items) {
		return []T{}
	}
	return items[start:min(len(items), start+count)]
}

func (a *API) streams(w http.ResponseWriter, r *http.Request) {
	a.ok(w, map[string]any{"streams": page(r, a.Streams())})
}

func (a *API) stream(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	for _, s := range a.Streams() {
		if s.ID == id {
			a.ok(w, map[string]any{"stream": s})
			return
		}
	}
	a.write(w, http.StatusNotFound, map[string]any{"code": CodeNotFound, "message": "no stream with id " + strconv.Quote(id)})
}

func (a *API) toClient(s clients.Snapshot) Client {
	alive := time.Since(s.Started).Seconds()
	c := Client{
		ID: s.ID, Vhost: s.Key.Vhost, IP: host(s.Remote), TcURL: s.TcURL,
		URL: "/" + s.Key.App + "/" + s.Key.Name, Name: s.Key.Name, Type: s.Kind, Publish: s.Publish,
		Alive: float64(int64(alive*1000)) / 1000, SendBytes: s.Sent, RecvBytes: s.Recv,
	}
	if a.StreamOf != nil {
		c.Stream = a.StreamOf(s)
	}
	if alive > 0 {
		c.Kbps = Kbps{Recv30s: int64(float64(s.Recv*8) / alive / 1000), Send30s: int64(float64(s.Sent*8) / alive / 1000)}
	}
	return c
}

func host(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		return strings.Trim(addr[:i], "[]")
	}
	return addr
}

func (a *API) clients(w http.ResponseWriter, r *http.Request) {
	list := a.Clients.List()
	out := make([]Client, 0, len(list))
	for _, s := range list {
		out = append(out, a.toClient(s))
	}
	a.ok(w, map[string]any{"clients": page(r, out)})
}

func (a *API) client(w http.ResponseWriter, r *http.Request) {
	s, ok := a.Clients.Get(r.PathValue("id"))
	if !ok {
		a.notFoundClient(w, r.PathValue("id"))
		return
	}
	a.ok(w, map[string]any{"client": a.toClient(s)})
}

func (a *API) notFoundClient(w http.ResponseWriter, id string) {
	a.write(w, http.StatusNotFound, map[string]any{"code": CodeNotFound, "message": "no client with id " + strconv.Quote(id)})
}

func (a *API) kick(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !a.Clients.Kick(id, clients.ErrKicked) {
		a.notFoundClient(w, id)
		return
	}
	a.ok(w, map[string]any{})
}
