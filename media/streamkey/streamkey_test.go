package streamkey

import (
	"errors"
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	k, err := New("", "live", "s1-A_b~.x")
	if err != nil {
		t.Fatal(err)
	}
	if k.String() != "default/live/s1-A_b~.x" {
		t.Fatalf("got %q", k.String())
	}
	k, err = Parse("v1/app/name")
	if err != nil || k.Vhost != "v1" || k.App != "app" || k.Name != "name" {
		t.Fatalf("parse: %+v %v", k, err)
	}
	if _, err := New("", "a", strings.Repeat("x", 128)); err != nil {
		t.Fatal(err)
	}
}

func TestInvalid(t *testing.T) {
	cases := []struct{ app, name, want string }{
		{"live", "", "name is empty"},
		{"", "s", "app is empty"},
		{"live", "..", `name ".." is not allowed`},
		{"live", ".", `name "." is not allowed`},
		{"live", "a..b", `name "a..b" is not allowed`},
		{"..x", "s", `app "..x" is not allowed`},
		{"live", "a/b", "forbidden character '/'"},
		{"live", "a\x00b", `forbidden character '\x00'`},
		{"live", "a b", "forbidden character ' '"},
		{"live", "a?b", "forbidden character '?'"},
		{"live", strings.Repeat("x", 129), "129 bytes long"},
		{"li%ve", "s", "app"},
	}
	for _, c := range cases {
		_, err := New("", c.app, c.name)
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%q,%q): err=%v, want containing %q", c.app, c.name, err, c.want)
		}
	}
	for _, s := range []string{"a", "a/b/c/d", "../a/b"} {
		if _, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) accepted", s)
		}
	}
}
