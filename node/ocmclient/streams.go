package ocmclient

import (
	"context"
	"errors"
	"time"

	"github.com/livecluster/livecluster/node/backoff"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"
)

// conflictRetry paces the retries of a call the OCM answered with a
// concurrent change (ABORTED): the records moved under the transaction, so
// an immediate retry normally succeeds.
var conflictRetry = backoff.Policy{Min: 10 * time.Millisecond, Max: 200 * time.Millisecond}

// maxConflictRetries bounds those retries; past them the call fails with
// ErrConflict.
const maxConflictRetries = 8

// retryConflicts runs call until it returns something other than
// ErrConflict, at most maxConflictRetries more times, pausing with backoff.
func retryConflicts(ctx context.Context, call func() error) error {
	for attempt := 0; ; attempt++ {
		err := call()
		if !errors.Is(err, ErrConflict) || attempt >= maxConflictRetries {
			return err
		}
		if !backoff.Sleep(ctx, conflictRetry.Delay(attempt)) {
			return err
		}
	}
}

// ClaimRequest asks for ownership of a stream.
type ClaimRequest struct {
	Key streamkey.Key
	// Path is how the publisher reached the origin (UNSPECIFIED: DIRECT).
	Path ocmv1.PublishPath
	// ForwardedBy is the forwarding edge of a FORWARDED publish.
	ForwardedBy string
}

// Claim makes session s's node the owner of an unowned stream and returns
// the ownership record (with its epoch). A concurrent change at the OCM is
// retried here with backoff. Failures: *AlreadyOwnedError (owned, perhaps
// by this node already: compare Owner), ErrDraining, ErrSessionLost,
// ErrRefused (not an origin), ErrInvalidArgument, ErrUnavailable,
// ErrConflict (changes kept racing the claim).
func (c *Client) Claim(ctx context.Context, s Session, r ClaimRequest) (*ocmv1.Stream, error) {
	var st *ocmv1.Stream
	err := retryConflicts(ctx, func() error {
		call := c.opts.History.Now()
		resp, err := c.api.ClaimStream(ctx, &ocmv1.ClaimStreamRequest{
			NodeId: s.NodeID, LeaseId: s.LeaseID, Key: ocmv1.NewStreamKey(r.Key),
			PublishPath: r.Path, ForwardedBy: r.ForwardedBy,
		})
		st = resp.GetStream()
		err = mapSessionErr("ClaimStream "+r.Key.String(), err)
		c.record(HistoryEvent{Op: HistClaim, Lease: s.LeaseID, Key: r.Key.String(),
			OutOwner: st.GetOwnerNodeId(), OutEpoch: st.GetEpoch()}, call, err)
		return err
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

// Release gives up ownership of key at epoch. Failures: ErrStaleEpoch (the
// stream changed hands), ErrNotFound (not owned any more), ErrRefused
// (owned by another node), ErrSessionLost (the lease, and the claim with
// it, is gone), ErrInvalidArgument, ErrUnavailable.
func (c *Client) Release(ctx context.Context, s Session, key streamkey.Key, epoch int64) error {
	call := c.opts.History.Now()
	_, err := c.api.ReleaseStream(ctx, &ocmv1.ReleaseStreamRequest{
		NodeId: s.NodeID, LeaseId: s.LeaseID, Key: ocmv1.NewStreamKey(key), Epoch: epoch,
	})
	err = mapErr("ReleaseStream "+key.String(), err)
	c.record(HistoryEvent{Op: HistRelease, Lease: s.LeaseID, Key: key.String(), Epoch: epoch}, call, err)
	return err
}

// TransferRequest hands a stream to another origin.
type TransferRequest struct {
	Key streamkey.Key
	// Epoch is the epoch the caller believes is current.
	Epoch int64
	// To is the READY origin that becomes the owner.
	To          string
	Path        ocmv1.PublishPath
	ForwardedBy string
}

// Transfer hands the stream to r.To (called by its owner, or by r.To
// taking over from a DRAINING owner) and returns the new record. A
// concurrent change is retried here. Failures: ErrStaleEpoch, ErrNotFound
// (the stream or the target has no owner/session), ErrDraining (the
// target drains), ErrRefused, ErrSessionLost, ErrInvalidArgument,
// ErrUnavailable, ErrConflict.
func (c *Client) Transfer(ctx context.Context, s Session, r TransferRequest) (*ocmv1.Stream, error) {
	var st *ocmv1.Stream
	err := retryConflicts(ctx, func() error {
		call := c.opts.History.Now()
		resp, err := c.api.TransferStream(ctx, &ocmv1.TransferStreamRequest{
			NodeId: s.NodeID, LeaseId: s.LeaseID, Key: ocmv1.NewStreamKey(r.Key), Epoch: r.Epoch,
			ToNodeId: r.To, PublishPath: r.Path, ForwardedBy: r.ForwardedBy,
		})
		st = resp.GetStream()
		err = mapErr("TransferStream "+r.Key.String(), err)
		c.record(HistoryEvent{Op: HistTransfer, Lease: s.LeaseID, Key: r.Key.String(), Epoch: r.Epoch, To: r.To,
			OutOwner: st.GetOwnerNodeId(), OutEpoch: st.GetEpoch()}, call, err)
		return err
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

// Lookup returns the ownership record of key and the owner's node record.
// Failures: ErrNotFound (nobody owns it), ErrInvalidArgument,
// ErrUnavailable.
func (c *Client) Lookup(ctx context.Context, key streamkey.Key) (*ocmv1.Stream, *ocmv1.Node, error) {
	call := c.opts.History.Now()
	resp, err := c.api.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: ocmv1.NewStreamKey(key)})
	err = mapErr("LookupStream "+key.String(), err)
	c.record(HistoryEvent{Op: HistLookup, Key: key.String(),
		OutOwner: resp.GetStream().GetOwnerNodeId(), OutEpoch: resp.GetStream().GetEpoch()}, call, err)
	if err != nil {
		return nil, nil, err
	}
	return resp.GetStream(), resp.GetOwner(), nil
}

// Assign names the origin a publish of key should go to (zone preferred,
// exclude never chosen). owned is the current ownership record when the
// stream is owned (nil otherwise); when owned names another node than
// origin, origin must take the stream over (Transfer). Failures:
// ErrNoOrigin, ErrInvalidArgument, ErrUnavailable.
func (c *Client) Assign(ctx context.Context, key streamkey.Key, zone string, exclude []string) (origin *ocmv1.Node, owned *ocmv1.Stream, err error) {
	resp, err := c.api.AssignOrigin(ctx, &ocmv1.AssignOriginRequest{
		Key: ocmv1.NewStreamKey(key), Zone: zone, ExcludeNodeIds: exclude,
	})
	if err != nil {
		return nil, nil, mapErr("AssignOrigin "+key.String(), err)
	}
	return resp.GetOrigin(), resp.GetStream(), nil
}

// Nodes lists the registered nodes of role (UNSPECIFIED: all). Failures:
// ErrUnavailable.
func (c *Client) Nodes(ctx context.Context, role ocmv1.NodeRole) ([]*ocmv1.Node, error) {
	resp, err := c.api.ListNodes(ctx, &ocmv1.ListNodesRequest{Role: role})
	if err != nil {
		return nil, mapErr("ListNodes", err)
	}
	return resp.GetNodes(), nil
}
