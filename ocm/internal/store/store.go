// Package store is the OCM's etcd schema and every write it makes: node
// sessions (one lease per node) and stream ownership (stream keys attached to
// the owner node's lease, fenced by an epoch).
//
// Epoch: a stream's epoch is the ModRevision of its etcd key. A claim creates
// the key, so the epoch is also the key's CreateRevision; a transfer rewrites
// the key, so the epoch becomes the revision of that write. Nothing else ever
// writes a stream key, so the epoch changes on every claim and transfer and
// only then. Release and Transfer compare ModRevision == epoch in their
// transaction. The epoch is not stored in the value (it is only known once the
// write commits); DecodeStream fills it in from the key's metadata.
//
// Every method returns gRPC status errors with the codes documented in
// ocm.proto; etcd failures become Unavailable.
package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/raft/v3"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"
)

// DefaultPrefix is the default etcd key prefix.
const DefaultPrefix = "/livecluster/"

// Options configure a Store.
type Options struct {
	// Prefix of every key; default DefaultPrefix.
	Prefix string
	// LeaseTTL of node sessions; default 10s, at least 2s (etcd's minimum).
	LeaseTTL time.Duration
	// OpTimeout bounds each etcd round trip so a dead etcd becomes
	// Unavailable instead of a hang; default 5s.
	OpTimeout time.Duration
	// OnEtcdError, if set, is called with the operation name on every etcd
	// failure (for a metric).
	OnEtcdError func(op string)
	// Now is the clock; default time.Now.
	Now func() time.Time
	// RecordRefresh is how old a node record's last_heartbeat_at may get
	// before a heartbeat rewrites the record even though its load did not
	// change materially; default 30s.
	RecordRefresh time.Duration
}

// Store writes the OCM's state to etcd.
type Store struct {
	cli    *clientv3.Client
	schema Schema
	ttl    int64
	opTO   time.Duration
	onErr  func(string)
	now    func() time.Time
	// refresh is Options.RecordRefresh.
	refresh time.Duration
}

// New returns a Store on cli.
func New(cli *clientv3.Client, o Options) *Store {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 10 * time.Second
	}
	ttl := int64((o.LeaseTTL + time.Second - 1) / time.Second)
	if ttl < 2 {
		ttl = 2
	}
	if o.OpTimeout <= 0 {
		o.OpTimeout = 5 * time.Second
	}
	if o.OnEtcdError == nil {
		o.OnEtcdError = func(string) {}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.RecordRefresh <= 0 {
		o.RecordRefresh = 30 * time.Second
	}
	return &Store{cli: cli, schema: Schema{Prefix: o.Prefix}, ttl: ttl, opTO: o.OpTimeout, onErr: o.OnEtcdError, now: o.Now,
		refresh: o.RecordRefresh}
}

// Schema returns the key layout.
func (s *Store) Schema() Schema { return s.schema }

// LeaseTTL returns the session TTL in seconds.
func (s *Store) LeaseTTL() int64 { return s.ttl }

// Client returns the etcd client.
func (s *Store) Client() *clientv3.Client { return s.cli }

// DecodeNode decodes a node record.
func DecodeNode(kv *mvccpb.KeyValue) (*ocmv1.Node, error) {
	n := &ocmv1.Node{}
	if err := proto.Unmarshal(kv.Value, n); err != nil {
		return nil, fmt.Errorf("decode node %s: %w", kv.Key, err)
	}
	n.LeaseId = kv.Lease
	return n, nil
}

// DecodeStream decodes a stream record and sets its epoch from the key's
// ModRevision.
func DecodeStream(kv *mvccpb.KeyValue) (*ocmv1.Stream, error) {
	st := &ocmv1.Stream{}
	if err := proto.Unmarshal(kv.Value, st); err != nil {
		return nil, fmt.Errorf("decode stream %s: %w", kv.Key, err)
	}
	st.Epoch = kv.ModRevision
	return st, nil
}

func (s *Store) etcdErr(ctx context.Context, op string, err error) error {
	if ctx.Err() == context.Canceled {
		return status.Errorf(codes.Canceled, "%s: %v", op, ctx.Err())
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.InvalidArgument {
		// etcd refusing a request (too large, ...) is not an outage.
		return status.Errorf(codes.InvalidArgument, "%s: etcd: %v", op, err)
	}
	// Only the operation's first word, so the metric label stays bounded.
	s.onErr(strings.SplitN(op, " ", 2)[0])
	if errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded {
		return status.Errorf(codes.Unavailable, "%s: etcd unavailable: no answer in time (etcd has no quorum or is unreachable; the write did not happen, or may still happen if etcd had it): %v", op, err)
	}
	return status.Errorf(codes.Unavailable, "%s: etcd unavailable: %v", op, err)
}

// writeCtx bounds one write: etcd.opTimeout, and never past the caller's
// own deadline less a margin (a tenth of what is left, at most 500 ms), so
// that when etcd does not answer (no quorum, unreachable) the caller gets
// this OCM's UNAVAILABLE naming etcd before its own deadline fires, not a
// bare DEADLINE_EXCEEDED that says nothing about why.
func (s *Store) writeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	d := s.opTO
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		d = min(d, left-min(500*time.Millisecond, left/10))
	}
	return context.WithTimeout(ctx, d)
}

// timedAttempts is how many of commit's attempts share what is left of the
// deadline: the first gets a third, the second a half, every later one all
// that is left. An attempt forwarded to a leader that just died hangs
// until its own timeout, so it must not take the whole budget.
const timedAttempts = 3

// retryPause is how long commit waits before trying again after an
// attempt that failed at once (no leader: etcd drops the proposal without
// waiting), so that an election of a second or two is ridden out by a few
// dozen attempts, not thousands.
const retryPause = 50 * time.Millisecond

// commit runs the conditional transaction txn builds, again (within ctx)
// while an attempt fails without saying whether it applied, or says it did
// not: etcd's leader was lost (a proposal forwarded to a dead leader hangs
// until it times out; the next leader answers at once), a member has no
// leader at the moment (an election is under way: it drops the proposal
// at once), or the member this client used went away. Each of the first
// attempts gets a share of what is left of ctx (timedAttempts). Retrying
// is safe because every transaction given here compares the revision or
// the existence of each key it writes: once one attempt applied, the
// others cannot, and their Else branch reads the state the applied one
// left, which the caller recognises (see Claim). It fails with the last
// attempt's error when ctx ends or an attempt fails for any other reason;
// retried reports whether an attempt before the last failed.
func (s *Store) commit(ctx context.Context, txn func(ctx context.Context) clientv3.Txn) (resp *clientv3.TxnResponse, retried bool, err error) {
	for attempt := 0; ; attempt++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok && attempt < timedAttempts-1 {
			actx, cancel = context.WithTimeout(ctx, time.Until(dl)/time.Duration(timedAttempts-attempt))
		}
		t0 := time.Now()
		resp, err = txn(actx).Commit()
		cancel()
		if err == nil || ctx.Err() != nil || !retryable(err) {
			return resp, attempt > 0, err
		}
		retried = true
		if wait := retryPause - time.Since(t0); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return resp, true, err
			case <-t.C:
			}
		}
	}
}

// errProposalDropped is the message of raft's ErrProposalDropped, which
// etcd sends as codes.Unknown (it has no gRPC error of its own): the
// member had no leader to forward the write to and dropped it, so it did
// not apply.
var errProposalDropped = raft.ErrProposalDropped.Error()

// retryable reports whether a failed etcd request may be retried by
// commit: the failures of a lost leader, an election under way, a lost
// member or an attempt that timed out, not a refusal of the request
// itself.
func retryable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, rpctypes.ErrLeaderChanged) ||
		errors.Is(err, rpctypes.ErrNoLeader) || errors.Is(err, rpctypes.ErrTimeout) ||
		errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail) || errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost) {
		return true
	}
	switch st, _ := status.FromError(err); st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	case codes.Unknown:
		return st.Message() == errProposalDropped
	}
	return false
}

func sessionNotFound(id string, lease int64) error {
	return Reasoned(codes.NotFound, ocmv1.ReasonSessionNotFound, "node session %s (lease %x) not found: unknown node or lease expired; Register again", id, lease)
}

// getSession reads the node record and checks it belongs to the lease.
func (s *Store) getSession(ctx context.Context, id string, lease int64) (*mvccpb.KeyValue, *ocmv1.Node, error) {
	resp, err := s.cli.Get(ctx, s.schema.NodeKey(id))
	if err != nil {
		return nil, nil, s.etcdErr(ctx, "get node "+id, err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].Lease != lease {
		return nil, nil, sessionNotFound(id, lease)
	}
	n, err := DecodeNode(resp.Kvs[0])
	if err != nil {
		return nil, nil, status.Errorf(codes.Internal, "%v", err)
	}
	return resp.Kvs[0], n, nil
}

func checkSessionArgs(id string, lease int64) error {
	if err := ValidateNodeID(id); err != nil {
		return err
	}
	if lease == 0 {
		return status.Error(codes.InvalidArgument, "lease_id is required")
	}
	return nil
}

// Register starts a node session: grants a lease, writes the record on it and
// clears any draining marker. If the id already had a session, that session's
// lease is revoked (a restarted pod keeps its name but not its streams).
// It returns the stored record and the etcd revision of the write.
func (s *Store) Register(ctx context.Context, in *ocmv1.Node) (*ocmv1.Node, int64, error) {
	if in == nil {
		return nil, 0, status.Error(codes.InvalidArgument, "node is required")
	}
	if err := ValidateNodeID(in.GetId()); err != nil {
		return nil, 0, err
	}
	if _, ok := ocmv1.NodeRole_name[int32(in.GetRole())]; !ok || in.GetRole() == ocmv1.NodeRole_NODE_ROLE_UNSPECIFIED {
		return nil, 0, status.Errorf(codes.InvalidArgument, "node %s: role is required", in.GetId())
	}
	a := in.GetAddresses()
	if a.GetRtmp() == "" && a.GetHttp() == "" && a.GetAdmin() == "" {
		return nil, 0, status.Errorf(codes.InvalidArgument, "node %s: addresses are required", in.GetId())
	}
	ctx, cancel := s.writeCtx(ctx)
	defer cancel()
	id := in.GetId()
	lg, err := s.cli.Grant(ctx, s.ttl)
	if err != nil {
		return nil, 0, s.etcdErr(ctx, "register "+id+": grant lease", err)
	}
	now := timestamppb.New(s.now())
	n := &ocmv1.Node{
		Id:              id,
		Role:            in.GetRole(),
		Addresses:       proto.Clone(a).(*ocmv1.NodeAddresses),
		Zone:            in.GetZone(),
		Capacity:        in.GetCapacity(),
		State:           ocmv1.NodeState_NODE_STATE_READY,
		Load:            &ocmv1.Load{},
		LeaseId:         int64(lg.ID),
		RegisteredAt:    now,
		LastHeartbeatAt: now,
		Version:         in.GetVersion(),
	}
	val, err := proto.Marshal(n)
	if err != nil {
		return nil, 0, status.Errorf(codes.Internal, "register %s: %v", id, err)
	}
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpPut(s.schema.NodeKey(id), string(val), clientv3.WithLease(lg.ID), clientv3.WithPrevKV()),
		clientv3.OpDelete(s.schema.DrainKey(id)),
		// The liveness marker exists from the start, so that KeepSession can
		// tell a session being revoked (marker deleted) from a new one.
		clientv3.OpPut(s.schema.SessionKey(id), "registered", clientv3.WithLease(lg.ID)),
	).Commit()
	if err != nil {
		// Best effort: the lease would expire by itself anyway.
		_, _ = s.cli.Revoke(context.WithoutCancel(ctx), lg.ID)
		return nil, 0, s.etcdErr(ctx, "register "+id, err)
	}
	if prev := resp.Responses[0].GetResponsePut().GetPrevKv(); prev != nil && prev.Lease != 0 && prev.Lease != int64(lg.ID) {
		if _, err := s.cli.Revoke(ctx, clientv3.LeaseID(prev.Lease)); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return nil, 0, s.etcdErr(ctx, "register "+id+": revoke previous session", err)
		}
	}
	return n, resp.Header.Revision, nil
}

// Heartbeat renews the session's lease (by id, so any replica can serve it)
// and, when the record needs it, stores the load report and
// last_heartbeat_at in the node record. It returns the remaining TTL and the
// node's state.
//
// known is the caller's current copy of the node record (the replica's
// cache; nil when it has none). When it belongs to this session, is younger
// than RecordRefresh and the load did not change materially (see
// loadChanged), the heartbeat only renews the lease: one etcd call instead of
// a read, a renewal and a write. Node-record writes were the largest write
// load on etcd at scale (every origin and edge every TTL/3), and each also
// reached every replica's watch. The state returned is then known's, which
// may lag a Drain made a moment ago on another replica by the time that
// replica's watch takes; the next heartbeat reports it. A lost session fails
// with NotFound (SESSION_NOT_FOUND), an etcd failure with Unavailable.
func (s *Store) Heartbeat(ctx context.Context, id string, lease int64, load *ocmv1.Load, known *ocmv1.Node) (int64, ocmv1.NodeState, error) {
	if err := checkSessionArgs(id, lease); err != nil {
		return 0, 0, err
	}
	ctx, cancel := s.writeCtx(ctx)
	defer cancel()
	if known != nil && known.GetId() == id && known.GetLeaseId() == lease && !s.recordStale(known, load) {
		ka, err := s.cli.KeepAliveOnce(ctx, clientv3.LeaseID(lease))
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return 0, 0, sessionNotFound(id, lease)
		}
		if err != nil {
			return 0, 0, s.etcdErr(ctx, "heartbeat "+id+": keepalive", err)
		}
		return ka.TTL, known.GetState(), nil
	}
	var ttl int64
	for attempt := 0; ; attempt++ {
		kv, n, err := s.getSession(ctx, id, lease)
		if err != nil {
			return 0, 0, err
		}
		if attempt == 0 {
			ka, err := s.cli.KeepAliveOnce(ctx, clientv3.LeaseID(lease))
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return 0, 0, sessionNotFound(id, lease)
			}
			if err != nil {
				return 0, 0, s.etcdErr(ctx, "heartbeat "+id+": keepalive", err)
			}
			ttl = ka.TTL
		}
		if load != nil {
			n.Load = proto.Clone(load).(*ocmv1.Load)
		}
		n.LastHeartbeatAt = timestamppb.New(s.now())
		val, err := proto.Marshal(n)
		if err != nil {
			return 0, 0, status.Errorf(codes.Internal, "heartbeat %s: %v", id, err)
		}
		nk := s.schema.NodeKey(id)
		// The ModRevision guard keeps a concurrent Drain from being
		// overwritten with the old state.
		resp, err := s.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(nk), "=", kv.ModRevision),
		).Then(clientv3.OpPut(nk, string(val), clientv3.WithLease(clientv3.LeaseID(lease)))).Commit()
		if err != nil {
			return 0, 0, s.etcdErr(ctx, "heartbeat "+id, err)
		}
		if resp.Succeeded {
			return ttl, n.State, nil
		}
		if attempt >= 10 {
			return 0, 0, Reasoned(codes.Aborted, ocmv1.ReasonConcurrentChange, "heartbeat %s: too much contention on the node record", id)
		}
	}
}

// recordStale reports whether a heartbeat with load should rewrite the node
// record known: it is older than the refresh period, or the load moved.
func (s *Store) recordStale(known *ocmv1.Node, load *ocmv1.Load) bool {
	at := known.GetLastHeartbeatAt()
	if at == nil || s.now().Sub(at.AsTime()) >= s.refresh {
		return true
	}
	return load != nil && loadChanged(known.GetLoad(), load)
}

// loadChanged reports whether a load report differs from the stored one
// enough to be worth a write: any change of the stream count (placement
// compares it with the capacity), or a change of publishers, players,
// bandwidth or CPU by more than a tenth and more than a small floor. The
// byte counters, which grow all the time, never count.
func loadChanged(old, cur *ocmv1.Load) bool {
	if old.GetStreams() != cur.GetStreams() {
		return true
	}
	return moved(float64(old.GetPublishers()), float64(cur.GetPublishers()), 2) ||
		moved(float64(old.GetPlayers()), float64(cur.GetPlayers()), 10) ||
		moved(float64(old.GetIngressBps()), float64(cur.GetIngressBps()), 1e6) ||
		moved(float64(old.GetEgressBps()), float64(cur.GetEgressBps()), 1e6) ||
		moved(old.GetCpuCores(), cur.GetCpuCores(), 0.05)
}

// moved reports whether a and b differ by more than floor and by more than a
// tenth of the larger.
func moved(a, b, floor float64) bool {
	d := math.Abs(a - b)
	return d > floor && d > 0.1*math.Max(math.Abs(a), math.Abs(b))
}

// Drain marks the node DRAINING (record state and draining marker, both on
// the node's lease). It is idempotent.
func (s *Store) Drain(ctx context.Context, id string, lease int64) (*ocmv1.Node, int64, error) {
	if err := checkSessionArgs(id, lease); err != nil {
		return nil, 0, err
	}
	ctx, cancel := s.writeCtx(ctx)
	defer cancel()
	for attempt := 0; ; attempt++ {
		kv, n, err := s.getSession(ctx, id, lease)
		if err != nil {
			return nil, 0, err
		}
		n.State = ocmv1.NodeState_NODE_STATE_DRAINING
		val, err := proto.Marshal(n)
		if err != nil {
			return nil, 0, status.Errorf(codes.Internal, "drain %s: %v", id, err)
		}
		nk := s.schema.NodeKey(id)
		l := clientv3.WithLease(clientv3.LeaseID(lease))
		resp, err := s.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(nk), "=", kv.ModRevision),
		).Then(
			clientv3.OpPut(nk, string(val), l),
			clientv3.OpPut(s.schema.DrainKey(id), "", l),
		).Commit()
		if err != nil {
			return nil, 0, s.etcdErr(ctx, "drain "+id, err)
		}
		if resp.Succeeded {
			return n, resp.Header.Revision, nil
		}
		if attempt >= 10 {
			return nil, 0, Reasoned(codes.Aborted, ocmv1.ReasonConcurrentChange, "drain %s: too much contention on the node record", id)
		}
	}
}

// Deregister revokes the session's lease: the node record, its marker and
// every stream it owns disappear in one step.
func (s *Store) Deregister(ctx context.Context, id string, lease int64) (int64, error) {
	if err := checkSessionArgs(id, lease); err != nil {
		return 0, err
	}
	ctx, cancel := s.writeCtx(ctx)
	defer cancel()
	if _, _, err := s.getSession(ctx, id, lease); err != nil {
		return 0, err
	}
	resp, err := s.cli.Revoke(ctx, clientv3.LeaseID(lease))
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return 0, sessionNotFound(id, lease)
	}
	if err != nil {
		return 0, s.etcdErr(ctx, "deregister "+id, err)
	}
	return resp.Header.Revision, nil
}

// ClaimRequest asks for ownership of a stream.
type ClaimRequest struct {
	NodeID      string
	Lease       int64
	Key         streamkey.Key
	Path        ocmv1.PublishPath
	ForwardedBy string
}

func normPath(p ocmv1.PublishPath) ocmv1.PublishPath {
	if p == ocmv1.PublishPath_PUBLISH_PATH_UNSPECIFIED {
		return ocmv1.PublishPath_PUBLISH_PATH_DIRECT
	}
	return p
}

// OwnedError is the AlreadyExists status naming the current owner, with an
// ErrorInfo (reason STREAM_OWNED, metadata owner_node_id and epoch) and the
// Stream record itself as details.
func OwnedError(cur *ocmv1.Stream) error {
	st := status.Newf(codes.AlreadyExists, "stream %s is owned by node %s (epoch %d)",
		cur.GetKey().KeyString(), cur.GetOwnerNodeId(), cur.GetEpoch())
	if d, err := st.WithDetails(&errdetails.ErrorInfo{
		Reason: ocmv1.ReasonStreamOwned,
		Domain: ErrorDomain,
		Metadata: map[string]string{
			"owner_node_id": cur.GetOwnerNodeId(),
			"epoch":         strconv.FormatInt(cur.GetEpoch(), 10),
		},
	}, cur); err == nil {
		st = d
	}
	return st.Err()
}

// Claim makes the node the owner of an unowned stream, in one transaction:
// the stream key must not exist, the node key must exist on the presented
// lease (session valid), and the node must not be draining. The stream key is
// attached to the node's lease. The returned record carries the epoch.
//
// A claim of a stream the caller already owns also fails with AlreadyExists;
// the details carry the epoch, so a caller retrying after a lost reply can
// recover it.
func (s *Store) Claim(ctx context.Context, r ClaimRequest) (*ocmv1.Stream, error) {
	if err := checkSessionArgs(r.NodeID, r.Lease); err != nil {
		return nil, err
	}
	ctx, cancel := s.writeCtx(ctx)
	defer cancel()
	st := &ocmv1.Stream{
		Key:         ocmv1.NewStreamKey(r.Key),
		OwnerNodeId: r.NodeID,
		PublishPath: normPath(r.Path),
		ForwardedBy: r.ForwardedBy,
		ClaimedAt:   timestamppb.New(s.now()),
	}
	val, err := proto.Marshal(st)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "claim %s: %v", r.Key, err)
	}
	sk, nk, dk := s.schema.StreamKey(r.Key), s.schema.NodeKey(r.NodeID), s.schema.DrainKey(r.NodeID)
	resp, retried, err := s.commit(ctx, func(ctx context.Context) clientv3.Txn {
		return s.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.CreateRevision(sk), "=", 0),
			clientv3.Compare(clientv3.LeaseValue(nk), "=", r.Lease),
			clientv3.Compare(clientv3.CreateRevision(dk), "=", 0),
		).Then(
			clientv3.OpPut(sk, string(val), clientv3.WithLease(clientv3.LeaseID(r.Lease))),
		).Else(
			clientv3.OpGet(sk), clientv3.OpGet(nk), clientv3.OpGet(dk),
		)
	})
	if err != nil {
		return nil, s.etcdErr(ctx, "claim "+r.Key.String(), err)
	}
	if resp.Succeeded {
		st.Epoch = resp.Header.Revision
		return st, nil
	}
	skv := firstKV(resp, 0)
	nkv := firstKV(resp, 1)
	if nkv == nil || nkv.Lease != r.Lease {
		return nil, sessionNotFound(r.NodeID, r.Lease)
	}
	if retried && skv != nil && skv.Lease == r.Lease && string(skv.Value) == string(val) {
		// An earlier attempt applied (the record is byte for byte the one
		// written here, claim time included): the claim succeeded.
		st.Epoch = skv.ModRevision
		return st, nil
	}
	if skv != nil {
		cur, err := DecodeStream(skv)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "%v", err)
		}
		return nil, OwnedError(cur)
	}
	if firstKV(resp, 2) != nil {
		return nil, Reasoned(codes.FailedPrecondition, ocmv1.ReasonNodeDraining, "claim %s: node %s is DRAINING and takes no new streams", r.Key, r.NodeID)
	}
	// The state changed between the compare and the reads; report it as a
	// race the caller may retry.
	return nil, Reasoned(codes.Aborted, ocmv1.ReasonConcurrentChange, "claim %s: concurrent change, retry", r.Key)
}

func firstKV(resp *clientv3.TxnResponse, i int) *mvccpb.KeyValue {
	if i >= len(resp.Responses) {
		return nil
	}
	kvs := resp.Responses[i].GetResponseRange().GetKvs()
	if len(kvs) == 0 {
		return nil
	}
	return kvs[0]
}

func staleEpoch(k streamkey.Key, epoch int64, cur *ocmv1.Stream) error {
	return Reasoned(codes.FailedPrecondition, ocmv1.ReasonStaleEpoch, "stream %s: stale epoch %d: current epoch is %d, owned by %s",
		k, epoch, cur.GetEpoch(), cur.GetOwnerNodeId())
}

func streamNotFound(k streamkey.Key) error {
	return Reasoned(codes.NotFound, ocmv1.ReasonStreamNotFound, "stream %s is not owned by anyone", k)
}

// Release deletes the stream key if the epoch is current and the caller's
// session owns it. It returns the revision of the delete.
func (s *Store) Release(ctx context.Context, id string, lease int64, k streamkey.Key, epoch int64) (int64, error) {
	if err := checkSessionArgs(id, lease); err != nil {
		return 0, err
	}
	if epoch <= 0 {
		return 0, status.Error(codes.InvalidArgument, "epoch is required")
	}
	ctx, cancel := s.writeCtx(ctx)
	defer cancel()
	sk, nk := s.schema.StreamKey(k), s.schema.NodeKey(id)
	resp, retried, err := s.commit(ctx, func(ctx context.Context) clientv3.Txn {
		return s.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(sk), "=", epoch),
			clientv3.Compare(clientv3.LeaseValue(sk), "=", lease),
			clientv3.Compare(clientv3.LeaseValue(nk), "=", lease),
		).Then(clientv3.OpDelete(sk)).Else(clientv3.OpGet(sk), clientv3.OpGet(nk))
	})
	if err != nil {
		return 0, s.etcdErr(ctx, "release "+k.String(), err)
	}
	if resp.Succeeded {
		return resp.Header.Revision, nil
	}
	skv, nkv := firstKV(resp, 0), firstKV(resp, 1)
	if nkv == nil || nkv.Lease != lease {
		return 0, sessionNotFound(id, lease)
	}
	if skv == nil && retried {
		// An earlier attempt applied: with the session alive, nothing
		// else deletes a stream key (a transfer rewrites it, a lease loss
		// would have failed the session check). Released.
		return resp.Header.Revision, nil
	}
	if skv == nil {
		return 0, streamNotFound(k)
	}
	cur, err := DecodeStream(skv)
	if err != nil {
		return 0, status.Errorf(codes.Internal, "%v", err)
	}
	if cur.Epoch != epoch {
		return 0, staleEpoch(k, epoch, cur)
	}
	return 0, Reasoned(codes.FailedPrecondition, ocmv1.ReasonNotPermitted, "release %s: owned by node %s, not by %s", k, cur.OwnerNodeId, id)
}

// TransferRequest hands a stream to another origin.
type TransferRequest struct {
	NodeID      string // caller: the current owner, or ToNodeID taking over from a DRAINING owner
	Lease       int64  // caller's lease
	Key         streamkey.Key
	Epoch       int64
	ToNodeID    string
	Path        ocmv1.PublishPath
	ForwardedBy string
}

// Transfer rewrites the stream record with the new owner, attached to the new
// owner's lease, in one transaction that checks: the epoch is current, the
// caller's session is valid, the target's session is valid and the target is
// a READY origin, and the caller owns the stream (its lease holds the key) or
// is the target and the current owner is DRAINING. The returned record's
// epoch is the revision of the rewrite.
func (s *Store) Transfer(ctx context.Context, r TransferRequest) (*ocmv1.Stream, error) {
	if err := checkSessionArgs(r.NodeID, r.Lease); err != nil {
		return nil, err
	}
	if err := ValidateNodeID(r.ToNodeID); err != nil {
		return nil, err
	}
	if r.Epoch <= 0 {
		return nil, status.Error(codes.InvalidArgument, "epoch is required")
	}
	ctx, cancel := s.writeCtx(ctx)
	defer cancel()
	sk, tk, tdk := s.schema.StreamKey(r.Key), s.schema.NodeKey(r.ToNodeID), s.schema.DrainKey(r.ToNodeID)
	pre, err := s.cli.Txn(ctx).Then(clientv3.OpGet(sk), clientv3.OpGet(tk), clientv3.OpGet(tdk)).Commit()
	if err != nil {
		return nil, s.etcdErr(ctx, "transfer "+r.Key.String(), err)
	}
	skv := firstKV(pre, 0)
	if skv == nil {
		return nil, streamNotFound(r.Key)
	}
	cur, err := DecodeStream(skv)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	if cur.Epoch != r.Epoch {
		return nil, staleEpoch(r.Key, r.Epoch, cur)
	}
	tkv := firstKV(pre, 1)
	if tkv == nil {
		return nil, Reasoned(codes.NotFound, ocmv1.ReasonNodeNotFound, "transfer %s: target node %s has no session", r.Key, r.ToNodeID)
	}
	target, err := DecodeNode(tkv)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	if target.Role != ocmv1.NodeRole_NODE_ROLE_ORIGIN {
		return nil, Reasoned(codes.FailedPrecondition, ocmv1.ReasonNotPermitted, "transfer %s: target node %s is not an origin", r.Key, r.ToNodeID)
	}
	if firstKV(pre, 2) != nil {
		return nil, Reasoned(codes.FailedPrecondition, ocmv1.ReasonNodeDraining, "transfer %s: target node %s is DRAINING", r.Key, r.ToNodeID)
	}
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(sk), "=", r.Epoch),
		clientv3.Compare(clientv3.LeaseValue(s.schema.NodeKey(r.NodeID)), "=", r.Lease),
		clientv3.Compare(clientv3.LeaseValue(tk), "=", tkv.Lease),
		clientv3.Compare(clientv3.CreateRevision(tdk), "=", 0),
	}
	switch {
	case r.NodeID == cur.OwnerNodeId:
		cmps = append(cmps, clientv3.Compare(clientv3.LeaseValue(sk), "=", r.Lease))
	case r.NodeID == r.ToNodeID:
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.schema.DrainKey(cur.OwnerNodeId)), ">", 0))
	default:
		return nil, Reasoned(codes.FailedPrecondition, ocmv1.ReasonNotPermitted, "transfer %s: caller %s is neither the owner (%s) nor the target", r.Key, r.NodeID, cur.OwnerNodeId)
	}
	st := &ocmv1.Stream{
		Key:         ocmv1.NewStreamKey(r.Key),
		OwnerNodeId: r.ToNodeID,
		PublishPath: normPath(r.Path),
		ForwardedBy: r.ForwardedBy,
		ClaimedAt:   timestamppb.New(s.now()),
	}
	val, err := proto.Marshal(st)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "transfer %s: %v", r.Key, err)
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(
		clientv3.OpPut(sk, string(val), clientv3.WithLease(clientv3.LeaseID(tkv.Lease))),
	).Else(
		clientv3.OpGet(sk), clientv3.OpGet(s.schema.NodeKey(r.NodeID)), clientv3.OpGet(tk),
		clientv3.OpGet(tdk), clientv3.OpGet(s.schema.DrainKey(cur.OwnerNodeId)),
	).Commit()
	if err != nil {
		return nil, s.etcdErr(ctx, "transfer "+r.Key.String(), err)
	}
	if resp.Succeeded {
		st.Epoch = resp.Header.Revision
		return st, nil
	}
	if kv := firstKV(resp, 1); kv == nil || kv.Lease != r.Lease {
		return nil, sessionNotFound(r.NodeID, r.Lease)
	}
	kv := firstKV(resp, 0)
	if kv == nil {
		return nil, streamNotFound(r.Key)
	}
	if now, err := DecodeStream(kv); err == nil && now.Epoch != r.Epoch {
		return nil, staleEpoch(r.Key, r.Epoch, now)
	}
	if kv := firstKV(resp, 2); kv == nil || kv.Lease != tkv.Lease {
		return nil, Reasoned(codes.NotFound, ocmv1.ReasonNodeNotFound, "transfer %s: target node %s has no session", r.Key, r.ToNodeID)
	}
	if firstKV(resp, 3) != nil {
		return nil, Reasoned(codes.FailedPrecondition, ocmv1.ReasonNodeDraining, "transfer %s: target node %s is DRAINING", r.Key, r.ToNodeID)
	}
	if r.NodeID != cur.OwnerNodeId && firstKV(resp, 4) == nil {
		return nil, Reasoned(codes.FailedPrecondition, ocmv1.ReasonNotPermitted, "transfer %s: owner %s is not DRAINING; only the owner can hand the stream off", r.Key, cur.OwnerNodeId)
	}
	if r.NodeID == cur.OwnerNodeId {
		return nil, Reasoned(codes.FailedPrecondition, ocmv1.ReasonNotPermitted, "transfer %s: the stream is not held by the session of %s", r.Key, r.NodeID)
	}
	return nil, Reasoned(codes.Aborted, ocmv1.ReasonConcurrentChange, "transfer %s: concurrent change, retry", r.Key)
}
