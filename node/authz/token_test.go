package authz

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/livecluster/livecluster/node/config"
	"github.com/livecluster/livecluster/streamkey"
)

var (
	k1 = config.Key{ID: "k1", Secret: []byte("0123456789abcdef-one")}
	k2 = config.Key{ID: "k2", Secret: []byte("0123456789abcdef-two")}
	s1 = streamkey.Key{Vhost: "default", App: "live", Name: "s1"}
	t0 = time.Unix(1_800_000_000, 0)
)

func TestTokenVerify(t *testing.T) {
	ring := NewKeyring([]config.Key{k1})
	tok, err := ring.Mint("", "publish", s1, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := ring.Verify(tok, "publish", s1, t0); err != nil {
		t.Fatalf("valid token refused: %v", err)
	}
	s2 := s1
	s2.Name = "s2"
	otherVhost := s1
	otherVhost.Vhost = "v2"
	otherApp := s1
	otherApp.App = "vod"
	parts := strings.Split(tok, ".")
	for _, c := range []struct {
		name   string
		tok    string
		action string
		key    streamkey.Key
		now    time.Time
		want   error
	}{
		{"expired", tok, "publish", s1, t0.Add(time.Hour), ErrTokenExpired},
		{"other action", tok, "play", s1, t0, ErrTokenSignature},
		{"other stream", tok, "publish", s2, t0, ErrTokenSignature},
		{"other app", tok, "publish", otherApp, t0, ErrTokenSignature},
		{"other vhost", tok, "publish", otherVhost, t0, ErrTokenSignature},
		{"expiry pushed back", strings.Join([]string{parts[0], parts[1], "1900000000", parts[3]}, "."), "publish", s1, t0, ErrTokenSignature},
		{"kid swapped", strings.Join([]string{parts[0], "k2", parts[2], parts[3]}, "."), "publish", s1, t0, ErrTokenUnknownKey},
		{"signature flipped", tok[:len(tok)-2] + "AA", "publish", s1, t0, ErrTokenSignature},
		{"empty", "", "publish", s1, t0, ErrTokenMalformed},
		{"v2", "v2" + tok[2:], "publish", s1, t0, ErrTokenMalformed},
		{"leading zero expiry", strings.Join([]string{parts[0], parts[1], "0" + parts[2], parts[3]}, "."), "publish", s1, t0, ErrTokenMalformed},
		{"bad kid", "v1.k/1.1900000000.x", "publish", s1, t0, ErrTokenMalformed},
	} {
		err := ring.Verify(c.tok, c.action, c.key, c.now)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	// Signed with another secret under the same kid: a wrong key.
	wrong := NewKeyring([]config.Key{{ID: "k1", Secret: []byte("not-the-right-secret")}})
	if err := wrong.Verify(tok, "publish", s1, t0); !errors.Is(err, ErrTokenSignature) {
		t.Errorf("wrong secret: got %v", err)
	}
}

// A token minted by hand with the documented recipe verifies: the format
// in docs/security.md is the implementation.
func TestTokenDocumentedFormat(t *testing.T) {
	exp := t0.Add(time.Minute).Unix()
	msg := "lc1\nplay\ndefault\nlive\ns1\n" + "1800000060" + "\nk1"
	if exp != 1800000060 {
		t.Fatal("test arithmetic")
	}
	tok := "v1.k1.1800000060." + sign(k1.Secret, []byte(msg))
	ring := NewKeyring([]config.Key{k1})
	if err := ring.Verify(tok, "play", s1, t0); err != nil {
		t.Fatal(err)
	}
	minted, _ := ring.Mint("k1", "play", s1, time.Unix(exp, 0))
	if minted != tok {
		t.Fatalf("Mint %q != documented %q", minted, tok)
	}
}

// Rotation: a ring with the new key first and the old one second verifies
// both and mints with the new one.
func TestTokenRotation(t *testing.T) {
	old := NewKeyring([]config.Key{k1})
	oldTok, _ := old.Mint("", "play", s1, t0.Add(time.Hour))
	both := NewKeyring([]config.Key{k2, k1})
	newTok, _ := both.Mint("", "play", s1, t0.Add(time.Hour))
	if !strings.HasPrefix(newTok, "v1.k2.") {
		t.Fatalf("minted with %q, want the first key k2", newTok)
	}
	for _, tok := range []string{oldTok, newTok} {
		if err := both.Verify(tok, "play", s1, t0); err != nil {
			t.Errorf("during rotation %s refused: %v", tok, err)
		}
	}
	onlyNew := NewKeyring([]config.Key{k2})
	if err := onlyNew.Verify(oldTok, "play", s1, t0); !errors.Is(err, ErrTokenUnknownKey) {
		t.Errorf("old key removed: got %v", err)
	}
}

func TestParseKeys(t *testing.T) {
	for _, bad := range [][]string{
		{"nocolon"}, {":0123456789abcdef"}, {"k1:short"}, {"k 1:0123456789abcdef"},
		{"k1:0123456789abcdef", "k1:0123456789abcdefg"},
	} {
		if _, err := config.ParseKeys(bad); err == nil {
			t.Errorf("%q accepted", bad)
		} else if strings.Contains(err.Error(), "0123456789") {
			t.Errorf("error %q shows the secret", err)
		}
	}
	keys, err := config.ParseKeys([]string{"k2:0123456789abcdef:with:colons"})
	if err != nil || keys[0].ID != "k2" || string(keys[0].Secret) != "0123456789abcdef:with:colons" {
		t.Fatalf("got %v %v", keys, err)
	}
}
