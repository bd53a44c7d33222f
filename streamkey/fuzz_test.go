package streamkey

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

// FuzzParse: whatever the input, Parse either refuses it with an error
// wrapping ErrInvalid or returns a key that is valid, round-trips through
// String, and whose parts can never name a path outside a directory.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"live/s", "default/live/s", "v/a/b/c", "", "/", "live/..", "live/a%00", "live/" + strings.Repeat("x", 200), "a/b?vhost=c", "ä/b", "live/.hidden"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q): error %v does not wrap ErrInvalid", s, err)
			}
			return
		}
		if err := k.Validate(); err != nil {
			t.Fatalf("Parse(%q) returned an invalid key: %v", s, err)
		}
		for _, p := range []string{k.Vhost, k.App, k.Name} {
			if p == "" || p == "." || p == ".." || strings.ContainsAny(p, "/\\\x00") {
				t.Fatalf("Parse(%q) returned a part %q that could leave a directory", s, p)
			}
		}
		k2, err := Parse(k.String())
		if err != nil || k2 != k {
			t.Fatalf("round trip of %q: %v %v", k.String(), k2, err)
		}
		// The URL form decodes to the same key.
		q, err := url.ParseQuery(strings.TrimPrefix(k.Query(), "?"))
		if err != nil {
			t.Fatalf("Query %q: %v", k.Query(), err)
		}
		k3, err := FromURL(k.App, k.Name, q)
		if err != nil || k3 != k {
			t.Fatalf("FromURL of %v: %v %v", k, k3, err)
		}
	})
}
