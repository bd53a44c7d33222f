// This file is written by hand, not by buf: it is the one place a stream key
// crosses between its Go form (package streamkey) and its proto form.
// scripts/gen.sh rewrites only the *.pb.go files next to it.

package ocmv1

import "github.com/livecluster/livecluster/streamkey"

// NewStreamKey returns k as a message.
func NewStreamKey(k streamkey.Key) *StreamKey {
	return &StreamKey{Vhost: k.Vhost, App: k.App, Name: k.Name}
}

// Key validates the message and returns the key, with the default vhost
// when the message names none. A nil message or an invalid part is an error
// wrapping streamkey.ErrInvalid.
func (x *StreamKey) Key() (streamkey.Key, error) {
	if x == nil {
		return streamkey.Key{}, streamkey.ErrMissing
	}
	return streamkey.New(x.Vhost, x.App, x.Name)
}

// KeyString returns "vhost/app/name" (the default vhost when the message
// names none) without validating: for log lines and error messages about a
// key that was validated when it entered the cluster.
func (x *StreamKey) KeyString() string {
	v := x.GetVhost()
	if v == "" {
		v = streamkey.DefaultVhost
	}
	return v + "/" + x.GetApp() + "/" + x.GetName()
}
