package nodeid

import (
	"errors"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	for _, ok := range []string{"a", "origin-0", "edge-7f9c.zone_b", "0abc", strings.Repeat("x", 63)} {
		if err := Validate(ok); err != nil {
			t.Errorf("Validate(%q): %v", ok, err)
		}
	}
	for _, c := range []struct{ id, want string }{
		{"", "empty"},
		{strings.Repeat("x", 64), "64 characters long"},
		{"-a", "must start with a letter or digit"},
		{".a", "must start with a letter or digit"},
		{"a b", "character ' '"},
		{"a/b", "character '/'"},
		{"a\x00", `character '\x00'`},
		{"é", "must start"},
	} {
		err := Validate(c.id)
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%q) = %v, want an ErrInvalid containing %q", c.id, err, c.want)
		}
	}
}
