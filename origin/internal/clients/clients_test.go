package clients

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/livecluster/livecluster/streamkey"
)

func TestKickCountsAndWaitEmpty(t *testing.T) {
	r := New()
	ctx, cancel := context.WithCancelCause(context.Background())
	c, remove := r.Add(Info{Kind: KindFLVPlay, Protocol: "flv"}, nil, func() int64 { return 100 }, cancel)
	_, removePub := r.Add(Info{Kind: KindPublish, Protocol: "rtmp", Publish: true}, func() int64 { return 7 }, nil, func(error) {})
	if p, pl := r.Counts(); p != 1 || pl["flv"] != 1 {
		t.Fatalf("counts %d %v", p, pl)
	}
	if !r.Kick(c.ID(), ErrKicked) || !errors.Is(context.Cause(ctx), ErrKicked) {
		t.Fatal("kick did not cancel the client")
	}
	if r.Kick("nope", ErrKicked) {
		t.Error("kicked a missing client")
	}
	remove()
	remove() // idempotent
	removePub()
	if in, out := r.Bytes(); in != 7 || out != 100 {
		t.Errorf("bytes %d %d", in, out)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), time.Second)
	defer wcancel()
	if err := r.WaitEmpty(wctx); err != nil {
		t.Fatal(err)
	}
}

// TestCountsDropOnRemove: counts, Len and the per-protocol players fall as
// clients leave, and bytes of a gone client are kept.
func TestCountsDropOnRemove(t *testing.T) {
	r := New()
	_, rmFLV := r.Add(Info{Kind: KindFLVPlay, Protocol: "flv"}, nil, func() int64 { return 10 }, func(error) {})
	_, rmRTMP := r.Add(Info{Kind: KindRTMPPlay, Protocol: "rtmp"}, nil, func() int64 { return 20 }, func(error) {})
	_, rmPub := r.Add(Info{Kind: KindPublish, Protocol: "rtmp", Publish: true}, func() int64 { return 5 }, nil, func(error) {})
	if p, pl := r.Counts(); p != 1 || pl["flv"] != 1 || pl["rtmp"] != 1 || r.Len() != 3 {
		t.Fatalf("counts %d %v, len %d", p, pl, r.Len())
	}
	rmFLV()
	if p, pl := r.Counts(); p != 1 || pl["flv"] != 0 || pl["rtmp"] != 1 || r.Len() != 2 {
		t.Fatalf("after a player left: counts %d %v, len %d", p, pl, r.Len())
	}
	rmPub()
	if p, pl := r.Counts(); p != 0 || pl["rtmp"] != 1 || r.Len() != 1 {
		t.Fatalf("after the publisher left: counts %d %v, len %d", p, pl, r.Len())
	}
	rmRTMP()
	if p, pl := r.Counts(); p != 0 || len(pl) != 0 || r.Len() != 0 || len(r.List()) != 0 {
		t.Fatalf("all gone: counts %d %v, len %d, list %v", p, pl, r.Len(), r.List())
	}
	if in, out := r.Bytes(); in != 5 || out != 30 {
		t.Fatalf("bytes of gone clients %d %d, want 5 30", in, out)
	}
}

// TestKickAll: players only, or players and publishers, each with the cause.
func TestKickAll(t *testing.T) {
	r := New()
	type cl struct {
		ctx    context.Context
		remove func()
	}
	add := func(info Info) cl {
		ctx, cancel := context.WithCancelCause(context.Background())
		_, rm := r.Add(info, nil, nil, cancel)
		return cl{ctx, rm}
	}
	p1 := add(Info{Kind: KindFLVPlay, Protocol: "flv"})
	p2 := add(Info{Kind: KindRTMPPlay, Protocol: "rtmp"})
	pub := add(Info{Kind: KindPublish, Protocol: "rtmp", Publish: true})
	drain := errors.New("draining")
	if n := r.KickAll(drain, false); n != 2 {
		t.Fatalf("KickAll(players) kicked %d, want 2", n)
	}
	for i, c := range []cl{p1, p2} {
		if !errors.Is(context.Cause(c.ctx), drain) {
			t.Errorf("player %d not kicked with the cause: %v", i, context.Cause(c.ctx))
		}
	}
	if pub.ctx.Err() != nil {
		t.Fatal("KickAll(players) kicked the publisher")
	}
	p1.remove()
	p2.remove()
	if n := r.KickAll(ErrKicked, true); n != 1 || !errors.Is(context.Cause(pub.ctx), ErrKicked) {
		t.Fatalf("KickAll(all) kicked %d, publisher cause %v", n, context.Cause(pub.ctx))
	}
	pub.remove()
	if n := r.KickAll(ErrKicked, true); n != 0 {
		t.Fatalf("KickAll on an empty registry kicked %d", n)
	}
}

// TestKickPlayers: only players of the streams named gone are kicked,
// never a publisher (even of a gone stream), and Changed fires on a
// removal.
func TestKickPlayers(t *testing.T) {
	r := New()
	a := streamkey.Key{Vhost: "default", App: "live", Name: "a"}
	b := streamkey.Key{Vhost: "default", App: "live", Name: "b"}
	type cl struct {
		ctx    context.Context
		remove func()
	}
	add := func(key streamkey.Key, publish bool) cl {
		ctx, cancel := context.WithCancelCause(context.Background())
		_, remove := r.Add(Info{Kind: KindRTMPPlay, Protocol: "rtmp", Key: key, Publish: publish}, nil, nil, cancel)
		return cl{ctx, remove}
	}
	playA, playB, pubA := add(a, false), add(b, false), add(a, true)
	cause := errors.New("gone")
	ids := r.KickPlayers(cause, func(k streamkey.Key) bool { return k == a })
	if len(ids) != 1 {
		t.Fatalf("kicked %d clients, want 1", len(ids))
	}
	if !errors.Is(context.Cause(playA.ctx), cause) {
		t.Error("the player of the gone stream was not kicked")
	}
	if playB.ctx.Err() != nil || pubA.ctx.Err() != nil {
		t.Error("a player of a live stream or a publisher was kicked")
	}
	ch := r.Changed()
	playA.remove()
	select {
	case <-ch:
	case <-time.After(time.Second):
		t.Fatal("Changed did not fire on a removal")
	}
	playB.remove()
	pubA.remove()
}
