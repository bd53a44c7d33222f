package clients

import (
	"context"
	"errors"
	"testing"
	"time"
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
