package ocm_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

const (
	origin = ocmv1.NodeRole_NODE_ROLE_ORIGIN
	edge   = ocmv1.NodeRole_NODE_ROLE_EDGE
)

func TestConcurrentClaimOneWinner(t *testing.T) {
	r := startReplica(t, shared.Endpoints(), newPrefix(t), 10*time.Second)
	const nodes, workers = 20, 200
	var sess []session
	for i := range nodes {
		sess = append(sess, register(t, r.c, fmt.Sprintf("origin-%d", i), origin, "", 0))
	}
	ctx := ctxT(t, 30*time.Second)
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		winners = make(chan *ocmv1.Stream, workers)
		errs    = make(chan error, workers)
	)
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			st, err := claim(ctx, r.c, sess[i%nodes], key("race"))
			if err != nil {
				errs <- err
				return
			}
			winners <- st
		}()
	}
	close(start)
	wg.Wait()
	close(winners)
	close(errs)
	if len(winners) != 1 {
		t.Fatalf("%d claims succeeded, want exactly 1", len(winners))
	}
	w := <-winners
	n := 0
	for err := range errs {
		n++
		st := status.Convert(err)
		if st.Code() != codes.AlreadyExists {
			t.Fatalf("loser got %v, want AlreadyExists", err)
		}
		if !strings.Contains(st.Message(), w.OwnerNodeId) {
			t.Fatalf("AlreadyExists message %q does not name owner %s", st.Message(), w.OwnerNodeId)
		}
		var info *errdetails.ErrorInfo
		var rec *ocmv1.Stream
		for _, d := range st.Details() {
			switch d := d.(type) {
			case *errdetails.ErrorInfo:
				info = d
			case *ocmv1.Stream:
				rec = d
			}
		}
		if info == nil || info.Metadata["owner_node_id"] != w.OwnerNodeId || rec.GetEpoch() != w.Epoch {
			t.Fatalf("AlreadyExists details %v do not name owner %s epoch %d", st.Details(), w.OwnerNodeId, w.Epoch)
		}
	}
	if n != workers-1 {
		t.Fatalf("%d losers, want %d", n, workers-1)
	}
	lk, err := r.c.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: key("race")})
	if err != nil || lk.Stream.OwnerNodeId != w.OwnerNodeId || lk.Stream.Epoch != w.Epoch || lk.Owner.GetId() != w.OwnerNodeId {
		t.Fatalf("lookup = %v, %v; want owner %s epoch %d", lk, err, w.OwnerNodeId, w.Epoch)
	}
}

func TestLeaseExpiryFreesAllStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a lease to expire")
	}
	r := startReplica(t, shared.Endpoints(), newPrefix(t), 2*time.Second)
	ctx := ctxT(t, 30*time.Second)
	dead := register(t, r.c, "dead", origin, "", 0)
	alive := register(t, r.c, "alive", origin, "", 0)
	const n = 50
	for i := range n {
		if _, err := claim(ctx, r.c, dead, key(fmt.Sprintf("d%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := claim(ctx, r.c, alive, key("kept")); err != nil {
		t.Fatal(err)
	}
	w, err := r.c.WatchStreams(ctx, &ocmv1.WatchStreamsRequest{InitialState: true})
	if err != nil {
		t.Fatal(err)
	}
	puts := 0
	for {
		ev, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == ocmv1.WatchStreamsResponse_EVENT_TYPE_SYNCED {
			break
		}
		puts++
	}
	if puts != n+1 {
		t.Fatalf("initial state had %d streams, want %d", puts, n+1)
	}
	// Keep "alive" heartbeating from here on; "dead" never heartbeats.
	hbCtx, stopHB := context.WithCancel(ctx)
	hbDone := make(chan error, 1)
	go func() {
		tk := time.NewTicker(400 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-hbCtx.Done():
				hbDone <- nil
				return
			case <-tk.C:
				if _, err := r.c.Heartbeat(hbCtx, &ocmv1.HeartbeatRequest{NodeId: alive.id, LeaseId: alive.lease}); err != nil && hbCtx.Err() == nil {
					hbDone <- err
					return
				}
			}
		}
	}()
	deletes := map[string]bool{}
	for len(deletes) < n {
		ev, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type != ocmv1.WatchStreamsResponse_EVENT_TYPE_DELETE {
			t.Fatalf("unexpected event %v", ev)
		}
		if ev.Stream.OwnerNodeId != dead.id {
			t.Fatalf("stream of %s deleted: %v", ev.Stream.OwnerNodeId, ev)
		}
		deletes[ev.Stream.Key.Name] = true
	}
	stopHB()
	if err := <-hbDone; err != nil {
		t.Fatalf("heartbeat of the live node: %v", err)
	}
	if _, err := r.c.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: key("kept")}); err != nil {
		t.Fatalf("the heartbeating node lost its stream: %v", err)
	}
	_, err = r.c.Heartbeat(ctx, &ocmv1.HeartbeatRequest{NodeId: dead.id, LeaseId: dead.lease})
	wantCode(t, err, codes.NotFound, "heartbeat after expiry")
	_, err = claim(ctx, r.c, dead, key("again"))
	wantCode(t, err, codes.NotFound, "claim with an expired session")
	nodes, err := r.c.ListNodes(ctx, &ocmv1.ListNodesRequest{})
	if err != nil || len(nodes.Nodes) != 1 || nodes.Nodes[0].Id != alive.id {
		t.Fatalf("nodes after expiry = %v, %v", nodes, err)
	}
}

func TestTransferAndDrain(t *testing.T) {
	r := startReplica(t, shared.Endpoints(), newPrefix(t), 10*time.Second)
	ctx := ctxT(t, 30*time.Second)
	a := register(t, r.c, "a", origin, "", 0)
	b := register(t, r.c, "b", origin, "", 0)
	c := register(t, r.c, "c", origin, "", 0)
	e := register(t, r.c, "e", edge, "", 0)
	k := key("s")
	st, err := claim(ctx, r.c, a, k)
	if err != nil {
		t.Fatal(err)
	}
	if st.Epoch <= 0 {
		t.Fatalf("epoch %d", st.Epoch)
	}
	transfer := func(caller session, to string, epoch int64) (*ocmv1.Stream, error) {
		resp, err := r.c.TransferStream(ctx, &ocmv1.TransferStreamRequest{NodeId: caller.id, LeaseId: caller.lease, Key: k, Epoch: epoch, ToNodeId: to})
		return resp.GetStream(), err
	}
	_, err = transfer(a, b.id, st.Epoch-1)
	wantCode(t, err, codes.FailedPrecondition, "transfer with a stale epoch")
	_, err = transfer(c, b.id, st.Epoch)
	wantCode(t, err, codes.FailedPrecondition, "transfer by a third node")
	_, err = transfer(b, b.id, st.Epoch)
	wantCode(t, err, codes.FailedPrecondition, "take-over from a READY owner")
	_, err = transfer(a, e.id, st.Epoch)
	wantCode(t, err, codes.FailedPrecondition, "transfer to an edge")
	_, err = transfer(a, "nobody", st.Epoch)
	wantCode(t, err, codes.NotFound, "transfer to an unknown node")

	st2, err := transfer(a, b.id, st.Epoch)
	if err != nil {
		t.Fatal(err)
	}
	if st2.OwnerNodeId != b.id || st2.Epoch == st.Epoch || st2.Epoch <= st.Epoch {
		t.Fatalf("after transfer: %v (old epoch %d)", st2, st.Epoch)
	}
	lk, err := r.c.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: k})
	if err != nil || lk.Stream.OwnerNodeId != b.id || lk.Stream.Epoch != st2.Epoch {
		t.Fatalf("lookup after transfer = %v, %v", lk, err)
	}
	_, err = r.c.ReleaseStream(ctx, &ocmv1.ReleaseStreamRequest{NodeId: a.id, LeaseId: a.lease, Key: k, Epoch: st.Epoch})
	wantCode(t, err, codes.FailedPrecondition, "release by the old owner with the old epoch")

	// b drains: it keeps its stream, takes nothing new, and c can take over.
	dr, err := r.c.Drain(ctx, &ocmv1.DrainRequest{NodeId: b.id, LeaseId: b.lease})
	if err != nil || dr.Node.State != ocmv1.NodeState_NODE_STATE_DRAINING {
		t.Fatalf("drain = %v, %v", dr, err)
	}
	_, err = claim(ctx, r.c, b, key("new"))
	wantCode(t, err, codes.FailedPrecondition, "claim by a DRAINING node")
	_, err = transfer(a, b.id, st2.Epoch)
	wantCode(t, err, codes.FailedPrecondition, "transfer to a DRAINING node")
	hb, err := r.c.Heartbeat(ctx, &ocmv1.HeartbeatRequest{NodeId: b.id, LeaseId: b.lease, Load: &ocmv1.Load{Streams: 1}})
	if err != nil || hb.State != ocmv1.NodeState_NODE_STATE_DRAINING {
		t.Fatalf("heartbeat of a draining node = %v, %v (state must stay DRAINING)", hb, err)
	}
	as, err := r.c.AssignOrigin(ctx, &ocmv1.AssignOriginRequest{Key: key("placed"), ExcludeNodeIds: []string{a.id}})
	if err != nil || as.Origin.Id != c.id {
		t.Fatalf("assign with a excluded and b draining = %v, %v; want c", as, err)
	}
	st3, err := transfer(c, c.id, st2.Epoch)
	if err != nil {
		t.Fatalf("take-over from a DRAINING owner: %v", err)
	}
	if st3.OwnerNodeId != c.id || st3.Epoch <= st2.Epoch {
		t.Fatalf("after take-over: %v", st3)
	}
	// The stream is on c's lease now: b deregistering does not take it along.
	if _, err := r.c.Deregister(ctx, &ocmv1.DeregisterRequest{NodeId: b.id, LeaseId: b.lease}); err != nil {
		t.Fatal(err)
	}
	as, err = r.c.AssignOrigin(ctx, &ocmv1.AssignOriginRequest{Key: k})
	if err != nil || as.Origin.Id != c.id || as.Stream.GetEpoch() != st3.Epoch {
		t.Fatalf("assign of an owned stream = %v, %v; want owner c", as, err)
	}
	_, err = r.c.ReleaseStream(ctx, &ocmv1.ReleaseStreamRequest{NodeId: c.id, LeaseId: c.lease, Key: k, Epoch: st2.Epoch})
	wantCode(t, err, codes.FailedPrecondition, "release with the pre-take-over epoch")
	if _, err := r.c.ReleaseStream(ctx, &ocmv1.ReleaseStreamRequest{NodeId: c.id, LeaseId: c.lease, Key: k, Epoch: st3.Epoch}); err != nil {
		t.Fatal(err)
	}
	_, err = r.c.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: k})
	wantCode(t, err, codes.NotFound, "lookup after release")
	_, err = r.c.ReleaseStream(ctx, &ocmv1.ReleaseStreamRequest{NodeId: c.id, LeaseId: c.lease, Key: k, Epoch: st3.Epoch})
	wantCode(t, err, codes.NotFound, "second release")
	// A new claim gets a new epoch.
	st4, err := claim(ctx, r.c, c, k)
	if err != nil || st4.Epoch <= st3.Epoch {
		t.Fatalf("re-claim = %v, %v", st4, err)
	}
	_, err = claim(ctx, r.c, e, key("by-edge"))
	wantCode(t, err, codes.FailedPrecondition, "claim by an edge")
}

func TestBadRequests(t *testing.T) {
	r := startReplica(t, shared.Endpoints(), newPrefix(t), 10*time.Second)
	ctx := ctxT(t, 20*time.Second)
	a := register(t, r.c, "a", origin, "", 0)
	bad := []*ocmv1.StreamKey{
		{App: "live", Name: "../x"},
		{App: "..", Name: "x"},
		{App: "live", Name: "."},
		{App: "live", Name: ""},
		{App: "", Name: "x"},
		{App: "live", Name: strings.Repeat("a", 200)},
		{App: "live", Name: "a\nb"},
		{App: "live", Name: "a\x00"},
		{Vhost: "a/b", App: "live", Name: "x"},
		{App: "live", Name: "sp ace"},
		{App: "live", Name: "..x"},
		{App: "live", Name: "a..b"},
		nil,
	}
	for _, k := range bad {
		_, err := claim(ctx, r.c, a, k)
		wantCode(t, err, codes.InvalidArgument, fmt.Sprintf("claim %q", k))
		_, err = r.c.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: k})
		wantCode(t, err, codes.InvalidArgument, fmt.Sprintf("lookup %q", k))
	}
	if _, err := claim(ctx, r.c, a, &ocmv1.StreamKey{App: "live", Name: strings.Repeat("a", 128) + ""}); err != nil {
		t.Fatalf("128-character name refused: %v", err)
	}
	if _, err := claim(ctx, r.c, a, &ocmv1.StreamKey{App: "li.v-e_~", Name: ".x.y"}); err != nil {
		t.Fatalf("valid odd name refused: %v", err)
	}
	lk, err := r.c.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: &ocmv1.StreamKey{Vhost: "default", App: "li.v-e_~", Name: ".x.y"}})
	if err != nil || lk.Stream.Key.Vhost != "default" {
		t.Fatalf("empty vhost is not default: %v, %v", lk, err)
	}
	_, err = claim(ctx, r.c, session{id: "ghost", lease: a.lease}, key("x"))
	wantCode(t, err, codes.NotFound, "claim by an unknown node")
	_, err = claim(ctx, r.c, session{id: a.id, lease: a.lease + 1}, key("x"))
	wantCode(t, err, codes.NotFound, "claim with a wrong lease")
	_, err = claim(ctx, r.c, session{id: "bad/id", lease: 1}, key("x"))
	wantCode(t, err, codes.InvalidArgument, "claim with a bad node id")
	_, err = r.c.Heartbeat(ctx, &ocmv1.HeartbeatRequest{NodeId: "ghost", LeaseId: 12345})
	wantCode(t, err, codes.NotFound, "heartbeat of an unknown node")
	_, err = r.c.Drain(ctx, &ocmv1.DrainRequest{NodeId: "ghost", LeaseId: 12345})
	wantCode(t, err, codes.NotFound, "drain of an unknown node")
	_, err = r.c.Register(ctx, &ocmv1.RegisterRequest{Node: &ocmv1.Node{Id: "x", Addresses: &ocmv1.NodeAddresses{Rtmp: "x:1"}}})
	wantCode(t, err, codes.InvalidArgument, "register without role")
	_, err = r.c.Register(ctx, &ocmv1.RegisterRequest{Node: &ocmv1.Node{Id: "x", Role: origin}})
	wantCode(t, err, codes.InvalidArgument, "register without addresses")
	_, err = r.c.Register(ctx, &ocmv1.RegisterRequest{Node: &ocmv1.Node{Id: "-x", Role: origin, Addresses: &ocmv1.NodeAddresses{Rtmp: "x:1"}}})
	wantCode(t, err, codes.InvalidArgument, "register with a bad id")
	_, err = r.c.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: key("nothing")})
	wantCode(t, err, codes.NotFound, "lookup of an unowned stream")
	_, err = r.c.ListStreams(ctx, &ocmv1.ListStreamsRequest{PageToken: "!!"})
	wantCode(t, err, codes.InvalidArgument, "bad page token")
	_, err = r.c.AssignOrigin(ctx, &ocmv1.AssignOriginRequest{Key: key("y"), ExcludeNodeIds: []string{a.id}})
	wantCode(t, err, codes.FailedPrecondition, "assign with no origin left")

	// A session ended by Deregister is gone; so are its streams.
	if _, err := r.c.Deregister(ctx, &ocmv1.DeregisterRequest{NodeId: a.id, LeaseId: a.lease}); err != nil {
		t.Fatal(err)
	}
	_, err = claim(ctx, r.c, a, key("z"))
	wantCode(t, err, codes.NotFound, "claim after deregister")
	_, err = r.c.Deregister(ctx, &ocmv1.DeregisterRequest{NodeId: a.id, LeaseId: a.lease})
	wantCode(t, err, codes.NotFound, "second deregister")
	ls, err := r.c.ListStreams(ctx, &ocmv1.ListStreamsRequest{})
	if err != nil || len(ls.Streams) != 0 || ls.TotalSize != 0 {
		t.Fatalf("streams after deregister = %v, %v", ls, err)
	}
	// Re-registering a live id replaces the session and revokes the old one.
	s1 := register(t, r.c, "p", origin, "", 0)
	if _, err := claim(ctx, r.c, s1, key("p1")); err != nil {
		t.Fatal(err)
	}
	s2 := register(t, r.c, "p", origin, "", 0)
	if s2.lease == s1.lease {
		t.Fatal("re-register kept the lease")
	}
	_, err = r.c.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: key("p1")})
	wantCode(t, err, codes.NotFound, "stream of a replaced session")
	_, err = r.c.Heartbeat(ctx, &ocmv1.HeartbeatRequest{NodeId: s1.id, LeaseId: s1.lease})
	wantCode(t, err, codes.NotFound, "heartbeat of a replaced session")
}

func TestListStreamsPaginationAndJSON(t *testing.T) {
	r := startReplica(t, shared.Endpoints(), newPrefix(t), 10*time.Second)
	ctx := ctxT(t, 60*time.Second)
	a := register(t, r.c, "a", origin, "z1", 0)
	b := register(t, r.c, "b", origin, "z2", 0)
	const n = 250
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, app := a, "live"
			if i%2 == 1 {
				s, app = b, "game"
			}
			if _, err := claim(ctx, r.c, s, &ocmv1.StreamKey{App: app, Name: fmt.Sprintf("s%03d", i)}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	list := func(req *ocmv1.ListStreamsRequest) []string {
		var keys []string
		pages := 0
		for {
			resp, err := r.c.ListStreams(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, s := range resp.Streams {
				keys = append(keys, s.Key.Vhost+"/"+s.Key.App+"/"+s.Key.Name)
			}
			if int(resp.TotalSize) < len(keys) {
				t.Fatalf("total %d < %d seen", resp.TotalSize, len(keys))
			}
			if resp.NextPageToken == "" {
				if int(resp.TotalSize) != len(keys) {
					t.Fatalf("total %d, listed %d", resp.TotalSize, len(keys))
				}
				return keys
			}
			if pages > 100 {
				t.Fatal("pagination does not end")
			}
			req.PageToken = resp.NextPageToken
		}
	}
	all := list(&ocmv1.ListStreamsRequest{PageSize: 100})
	if len(all) != n {
		t.Fatalf("listed %d, want %d", len(all), n)
	}
	for i := 1; i < len(all); i++ {
		if all[i-1] >= all[i] {
			t.Fatalf("not ordered: %s then %s", all[i-1], all[i])
		}
	}
	if got := list(&ocmv1.ListStreamsRequest{PageSize: 7, OwnerNodeId: b.id}); len(got) != n/2 || !strings.HasPrefix(got[0], "default/game/") {
		t.Fatalf("owner filter: %d streams, first %v", len(got), got[:1])
	}
	if got := list(&ocmv1.ListStreamsRequest{App: "live"}); len(got) != n-n/2 {
		t.Fatalf("app filter: %d streams", len(got))
	}

	h := httptest.NewServer(r.HTTPHandler())
	defer h.Close()
	get := func(path string, wantStatus int) map[string]any {
		t.Helper()
		resp, err := http.Get(h.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != wantStatus {
			t.Fatalf("GET %s: %d %s, want %d", path, resp.StatusCode, body, wantStatus)
		}
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("GET %s: %v in %s", path, err, body)
		}
		return m
	}
	var seen []string
	tok := ""
	for {
		m := get("/api/v1/streams?limit=60&node=a&page_token="+tok, 200)
		for _, s := range m["streams"].([]any) {
			k := s.(map[string]any)["key"].(map[string]any)
			seen = append(seen, k["name"].(string))
			if s.(map[string]any)["ownerNodeId"] != "a" {
				t.Fatalf("node filter leaked %v", s)
			}
		}
		if m["totalSize"].(float64) != n-n/2 {
			t.Fatalf("totalSize %v", m["totalSize"])
		}
		next, _ := m["nextPageToken"].(string)
		if next == "" {
			break
		}
		tok = next
	}
	if len(seen) != n-n/2 {
		t.Fatalf("JSON pages listed %d streams, want %d", len(seen), n-n/2)
	}
	one := get("/api/v1/streams/default/live/s000", 200)
	if one["stream"].(map[string]any)["ownerNodeId"] != "a" || one["owner"].(map[string]any)["id"] != "a" {
		t.Fatalf("lookup JSON %v", one)
	}
	if e := get("/api/v1/streams/default/live/missing", 404); e["code"] != "NOT_FOUND" || e["message"] == "" {
		t.Fatalf("404 JSON %v", e)
	}
	get("/api/v1/streams/default/live/sp%20ace", 400)
	get("/api/v1/streams/default/live/ctl%01", 400)
	nodes := get("/api/v1/nodes", 200)["nodes"].([]any)
	if len(nodes) != 2 || nodes[0].(map[string]any)["id"] != "a" || nodes[1].(map[string]any)["zone"] != "z2" {
		t.Fatalf("nodes JSON %v", nodes)
	}
	if got := get("/api/v1/nodes?role=edge", 200); len(got) != 0 && got["nodes"] != nil {
		t.Fatalf("edge nodes %v", got)
	}
}
