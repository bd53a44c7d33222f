// Package clients keeps the origin's connected clients (publishers and
// players of every protocol): their ids for the HTTP API, byte counters for
// the load report and metrics, and a way to kick each one.
package clients

import (
	"context"
	"crypto/rand"
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livecluster/livecluster/streamkey"
)

// Kinds of client, named like SRS's client "type".
const (
	KindPublish  = "fmle-publish"
	KindRTMPPlay = "rtmp-play"
	KindFLVPlay  = "flv-play"
)

// ErrKicked is the cause given to a client kicked through the API.
var ErrKicked = errors.New("kicked by the HTTP API")

// Info describes a client; it does not change after Add.
type Info struct {
	Kind     string
	Protocol string // "rtmp" or "flv"
	Publish  bool
	Key      streamkey.Key
	Remote   string
	TcURL    string
}

// Snapshot is a client as the API shows it.
type Snapshot struct {
	Info
	ID      string
	Started time.Time
	Recv    int64 // bytes received from the client
	Sent    int64 // bytes sent to the client
}

// Client is one registered client.
type Client struct {
	info       Info
	id         string
	started    time.Time
	recv, sent func() int64
	kick       context.CancelCauseFunc
}

// ID returns the client's API id.
func (c *Client) ID() string { return c.id }

// Registry holds the connected clients.
type Registry struct {
	mu      sync.Mutex
	m       map[string]*Client
	changed chan struct{} // closed and replaced on every removal

	doneIn, doneOut atomic.Int64 // bytes of clients already gone
}

// New returns an empty registry.
func New() *Registry {
	return &Registry{m: map[string]*Client{}, changed: make(chan struct{})}
}

// newID returns 8 random lower-case base32 characters (like SRS's ids):
// not guessable, so a kick needs a listing first.
func newID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	var b [8]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = alphabet[b[i]&31]
	}
	return string(b[:])
}

// Add registers a client. recv and sent read its byte counters (nil: 0);
// kick ends it. The returned remove must be called when the client leaves.
func (r *Registry) Add(info Info, recv, sent func() int64, kick context.CancelCauseFunc) (*Client, func()) {
	zero := func() int64 { return 0 }
	if recv == nil {
		recv = zero
	}
	if sent == nil {
		sent = zero
	}
	c := &Client{info: info, started: time.Now(), recv: recv, sent: sent, kick: kick}
	r.mu.Lock()
	for {
		c.id = newID()
		if r.m[c.id] == nil {
			break
		}
	}
	r.m[c.id] = c
	r.mu.Unlock()
	var once sync.Once
	return c, func() {
		once.Do(func() {
			r.mu.Lock()
			delete(r.m, c.id)
			r.doneIn.Add(c.recv())
			r.doneOut.Add(c.sent())
			close(r.changed)
			r.changed = make(chan struct{})
			r.mu.Unlock()
		})
	}
}

func (c *Client) snapshot() Snapshot {
	return Snapshot{Info: c.info, ID: c.id, Started: c.started, Recv: c.recv(), Sent: c.sent()}
}

// List returns every client, publishers first, then by start time.
func (r *Registry) List() []Snapshot {
	r.mu.Lock()
	out := make([]Snapshot, 0, len(r.m))
	for _, c := range r.m {
		out = append(out, c.snapshot())
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Publish != out[j].Publish {
			return out[i].Publish
		}
		return out[i].Started.Before(out[j].Started)
	})
	return out
}

// Get returns one client.
func (r *Registry) Get(id string) (Snapshot, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.m[id]
	if c == nil {
		return Snapshot{}, false
	}
	return c.snapshot(), true
}

// Kick ends the client with cause; false when there is no such client.
func (r *Registry) Kick(id string, cause error) bool {
	r.mu.Lock()
	c := r.m[id]
	r.mu.Unlock()
	if c == nil {
		return false
	}
	c.kick(cause)
	return true
}

// KickAll ends every client (players and publishers, or only players).
func (r *Registry) KickAll(cause error, publishers bool) int {
	r.mu.Lock()
	var cs []*Client
	for _, c := range r.m {
		if publishers || !c.info.Publish {
			cs = append(cs, c)
		}
	}
	r.mu.Unlock()
	for _, c := range cs {
		c.kick(cause)
	}
	return len(cs)
}

// KickPlayers ends every player for whose stream gone(key) is true and
// returns the ids of those it kicked (a player already kicked is kicked
// again: a kick is idempotent).
func (r *Registry) KickPlayers(cause error, gone func(streamkey.Key) bool) []string {
	r.mu.Lock()
	var cs []*Client
	for _, c := range r.m {
		if !c.info.Publish && gone(c.info.Key) {
			cs = append(cs, c)
		}
	}
	r.mu.Unlock()
	ids := make([]string, 0, len(cs))
	for _, c := range cs {
		c.kick(cause)
		ids = append(ids, c.id)
	}
	return ids
}

// Changed returns a channel closed at the next removal of a client.
func (r *Registry) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// Counts returns the number of publishers and of players per protocol.
func (r *Registry) Counts() (publishers int, players map[string]int) {
	players = map[string]int{}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.m {
		if c.info.Publish {
			publishers++
		} else {
			players[c.info.Protocol]++
		}
	}
	return publishers, players
}

// Len returns the number of clients.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

// Bytes returns the bytes received from and sent to all clients, past and
// present, since the process started.
func (r *Registry) Bytes() (in, out int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	in, out = r.doneIn.Load(), r.doneOut.Load()
	for _, c := range r.m {
		in += c.recv()
		out += c.sent()
	}
	return in, out
}

// WaitEmpty waits until no client is left or ctx ends.
func (r *Registry) WaitEmpty(ctx context.Context) error {
	for {
		r.mu.Lock()
		n, ch := len(r.m), r.changed
		r.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}
