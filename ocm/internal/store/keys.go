package store

import (
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"
	"github.com/livecluster/livecluster/streamkey/nodeid"
)

// ArgError turns a validation error (a stream key, a node id) into the
// InvalidArgument status the API returns for it.
func ArgError(err error) error {
	return status.Error(codes.InvalidArgument, err.Error())
}

// KeyArg validates a stream key from a request and fills in the default
// vhost. The error is an InvalidArgument status.
func KeyArg(k *ocmv1.StreamKey) (streamkey.Key, error) {
	key, err := k.Key()
	if err != nil {
		return streamkey.Key{}, ArgError(err)
	}
	return key, nil
}

// ValidateNodeID checks a node id (nodeid.Validate). The error is an
// InvalidArgument status.
func ValidateNodeID(id string) error {
	if err := nodeid.Validate(id); err != nil {
		return ArgError(err)
	}
	return nil
}

// Schema names the etcd keys under a prefix:
//
//	<prefix>nodes/<id>               node record (binary ocmv1.Node), on the node's lease
//	<prefix>streams/<vhost>/<app>/<name>  stream record (binary ocmv1.Stream), on the owner's lease
//	<prefix>draining/<id>            empty marker, on the node's lease, present while DRAINING
//	<prefix>sessions/<id>            liveness marker, on the node's lease: written by Register and by
//	                                 every KeepSession stream; its ModRevision is the session generation
//
// The draining marker exists so that a claim can check "the node is not
// draining" inside its transaction (etcd can only compare whole values).
type Schema struct{ Prefix string }

// Kind of an etcd key under the prefix.
type Kind int

// Kinds of keys.
const (
	KindOther Kind = iota
	KindNode
	KindStream
)

// Nodes is the node key prefix.
func (s Schema) Nodes() string { return s.Prefix + "nodes/" }

// Streams is the stream key prefix.
func (s Schema) Streams() string { return s.Prefix + "streams/" }

// NodeKey is a node record's key.
func (s Schema) NodeKey(id string) string { return s.Nodes() + id }

// StreamKey is a stream record's key.
func (s Schema) StreamKey(k streamkey.Key) string { return s.Streams() + k.String() }

// DrainKey is a node's draining marker.
func (s Schema) DrainKey(id string) string { return s.Prefix + "draining/" + id }

// SessionKey is a node's liveness marker (see Store.KeepSession).
func (s Schema) SessionKey(id string) string { return s.Prefix + "sessions/" + id }

// Classify tells what an etcd key is and returns its id (node id or
// "vhost/app/name").
func (s Schema) Classify(key string) (Kind, string) {
	switch {
	case strings.HasPrefix(key, s.Nodes()):
		return KindNode, key[len(s.Nodes()):]
	case strings.HasPrefix(key, s.Streams()):
		return KindStream, key[len(s.Streams()):]
	}
	return KindOther, ""
}
