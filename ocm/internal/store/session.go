package store

import (
	"context"
	"errors"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// KeepSession records that a liveness stream of the session is held by
// replica: it rewrites the node's session marker (on the node's lease) and
// returns the generation (the marker's new ModRevision). Every replica that
// later considers revoking the session compares against the generation it
// recorded, so a node that came back on another replica is left alone.
//
// Failures: NotFound (SESSION_NOT_FOUND) when the session is unknown, its
// lease expired, or its marker is gone (a replica is revoking it: the node
// must Register again); Unavailable when etcd cannot be reached.
func (s *Store) KeepSession(ctx context.Context, id string, lease int64, replica string) (int64, error) {
	if err := checkSessionArgs(id, lease); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTO)
	defer cancel()
	nk, sk := s.schema.NodeKey(id), s.schema.SessionKey(id)
	resp, err := s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.LeaseValue(nk), "=", lease),
		clientv3.Compare(clientv3.LeaseValue(sk), "=", lease),
	).Then(clientv3.OpPut(sk, replica, clientv3.WithLease(clientv3.LeaseID(lease)))).Commit()
	if err != nil {
		return 0, s.etcdErr(ctx, "keep session "+id, err)
	}
	if !resp.Succeeded {
		return 0, sessionNotFound(id, lease)
	}
	return resp.Header.Revision, nil
}

// RevokeIfIdle revokes the session's lease (freeing every stream the node
// owns, as Deregister does) if the session marker is still at generation,
// i.e. no liveness stream was opened for the session since. It first deletes
// the marker in a transaction that compares the generation, so a stream
// opened after that point fails with NotFound instead of keeping a session
// that is about to go. It reports whether it revoked.
//
// Failures: Unavailable when etcd cannot be reached (the lease then lives on
// until its TTL, as it would have without the stream).
func (s *Store) RevokeIfIdle(ctx context.Context, id string, lease, generation int64) (bool, error) {
	if err := checkSessionArgs(id, lease); err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTO)
	defer cancel()
	sk := s.schema.SessionKey(id)
	resp, err := s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(sk), "=", generation),
		clientv3.Compare(clientv3.LeaseValue(sk), "=", lease),
	).Then(clientv3.OpDelete(sk)).Commit()
	if err != nil {
		return false, s.etcdErr(ctx, "revoke idle session "+id, err)
	}
	if !resp.Succeeded {
		return false, nil
	}
	if _, err := s.cli.Revoke(ctx, clientv3.LeaseID(lease)); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return false, s.etcdErr(ctx, "revoke idle session "+id, err)
	}
	return true, nil
}
