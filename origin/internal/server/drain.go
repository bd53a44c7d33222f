package server

import (
	"context"
	"fmt"
	"time"

	"github.com/livecluster/livecluster/streamkey"
)

// drainPoll re-checks the clients during the drain between removals: a
// publish that ends closes its hub before its client leaves the registry.
const drainPoll = 100 * time.Millisecond

// drainClients is the origin's part of the drain (step 3): it waits until
// no client is left, or ctx ends (shutdown.drainTimeout) with ctx's error.
//
// Only publishers are waited for: they are what a drain hands over (a
// forwarded publish moves to another origin with TransferStream, a direct
// publisher leaves and comes back elsewhere). A player, an edge's pull
// included, is let go as soon as its stream is no longer published here:
// there is nothing more to send it, and its edge pulls again from the new
// owner. Waiting for it instead would hold the drain for as long as its
// connection takes to end by itself, which for a peer that went away
// without closing (a cut network, a frozen edge) is the write deadline
// (limits.timeouts.rtmpWrite / httpWrite, 30 s): a player blocked in a
// write to a dead peer never sees its stream end. Connections that are
// neither publishers nor players (a connect that never publishes, a bare
// TCP check, HLS requests) are not clients and never held the drain.
func (s *Server) drainClients(ctx context.Context) error {
	id := s.rt.Config().NodeID
	kicked := map[string]bool{}
	gone := func(k streamkey.Key) bool { return s.pubs.PublisherOf(k) == "" }
	t := time.NewTicker(drainPoll)
	defer t.Stop()
	for {
		// Taken before the check, so a removal in between is not missed.
		changed := s.clients.Changed()
		if s.clients.Len() == 0 {
			return nil
		}
		cause := fmt.Errorf("origin %s is draining and no longer publishes this stream; play it again from its new origin", id)
		fresh := 0
		for _, cid := range s.clients.KickPlayers(cause, gone) {
			if !kicked[cid] {
				kicked[cid] = true
				fresh++
			}
		}
		if fresh > 0 {
			s.log.Info("drain: closing players whose stream is no longer published here", "players", fresh)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		case <-t.C:
		}
	}
}
