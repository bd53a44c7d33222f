package rtmp

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

const hsSize = 1536

// Keys of the digest ("complex") handshake used by Flash-era clients and
// players; ffmpeg uses it too and checks the server's answer.
var (
	hsClientFullKey = []byte{
		'G', 'e', 'n', 'u', 'i', 'n', 'e', ' ', 'A', 'd', 'o', 'b', 'e', ' ',
		'F', 'l', 'a', 's', 'h', ' ', 'P', 'l', 'a', 'y', 'e', 'r', ' ', '0', '0', '1',
		0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1,
		0x02, 0x9E, 0x7E, 0x57, 0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB,
		0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
	}
	hsServerFullKey = []byte{
		'G', 'e', 'n', 'u', 'i', 'n', 'e', ' ', 'A', 'd', 'o', 'b', 'e', ' ',
		'F', 'l', 'a', 's', 'h', ' ', 'M', 'e', 'd', 'i', 'a', ' ',
		'S', 'e', 'r', 'v', 'e', 'r', ' ', '0', '0', '1',
		0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1,
		0x02, 0x9E, 0x7E, 0x57, 0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB,
		0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
	}
	hsClientPartialKey = hsClientFullKey[:30]
	hsServerPartialKey = hsServerFullKey[:36]
)

// The digest sits at one of two places, chosen by 4 offset bytes that start
// at byte 8 (scheme 0) or 772 (scheme 1) of the 1536-byte packet.
var hsSchemeBase = [2]int{8, 772}

func hsDigestPos(p []byte, base int) int {
	sum := int(p[base]) + int(p[base+1]) + int(p[base+2]) + int(p[base+3])
	return sum%728 + base + 4
}

// hsDigest is the HMAC-SHA256 of p without the 32 digest bytes at gap.
func hsDigest(key, p []byte, gap int) []byte {
	h := hmac.New(sha256.New, key)
	if gap < 0 {
		h.Write(p)
	} else {
		h.Write(p[:gap])
		h.Write(p[gap+32:])
	}
	return h.Sum(nil)
}

// hsFindDigest returns the scheme and position of a valid digest in p, or -1.
func hsFindDigest(p, key []byte) (scheme, pos int) {
	for s, base := range hsSchemeBase {
		gap := hsDigestPos(p, base)
		if hmac.Equal(p[gap:gap+32], hsDigest(key, p, gap)) {
			return s, gap
		}
	}
	return -1, -1
}

// hsImprint writes a digest into p (time and version already set).
func hsImprint(p, key []byte, scheme int) int {
	gap := hsDigestPos(p, hsSchemeBase[scheme])
	copy(p[gap:], hsDigest(key, p, gap))
	return gap
}

// serverHandshake answers C0C1 with S0S1S2 and reads C2. A C1 carrying a
// digest gets a digest S1 and an S2 signed with the client's digest, as
// Flash players and ffmpeg verify; anything else gets the plain echo.
func (c *Conn) serverHandshake() error {
	if c.cfg.HandshakeTimeout > 0 {
		c.setupDeadline = time.Now().Add(c.cfg.HandshakeTimeout)
		_ = c.nc.SetDeadline(c.setupDeadline)
	}
	c0c1 := make([]byte, 1+hsSize)
	if _, err := io.ReadFull(c.br, c0c1[:1]); err != nil {
		return fmt.Errorf("read C0: %w", err)
	}
	if c0c1[0] != 3 {
		return fmt.Errorf("%w: C0 version %d, want 3", errBadHandshake, c0c1[0])
	}
	if _, err := io.ReadFull(c.br, c0c1[1:]); err != nil {
		return fmt.Errorf("read C1: %w", err)
	}
	c1 := c0c1[1:]
	out := make([]byte, 1+2*hsSize)
	out[0] = 3
	s1, s2 := out[1:1+hsSize], out[1+hsSize:]
	_, _ = rand.Read(s1[8:])
	binary.BigEndian.PutUint32(s1[0:4], uint32(time.Now().Unix()))
	scheme, pos := -1, -1
	if binary.BigEndian.Uint32(c1[4:8]) != 0 {
		scheme, pos = hsFindDigest(c1, hsClientPartialKey)
	}
	if scheme >= 0 {
		binary.BigEndian.PutUint32(s1[4:8], 0x04050001)
		hsImprint(s1, hsServerPartialKey, scheme)
		_, _ = rand.Read(s2)
		key := hsDigest(hsServerFullKey, c1[pos:pos+32], -1)
		copy(s2[hsSize-32:], hsDigest(key, s2[:hsSize-32], -1))
	} else {
		copy(s2, c1)
	}
	if _, err := c.bw.Write(out); err != nil {
		return fmt.Errorf("write S0S1S2: %w", err)
	}
	if err := c.bw.Flush(); err != nil {
		return fmt.Errorf("write S0S1S2: %w", err)
	}
	c2 := make([]byte, hsSize)
	if _, err := io.ReadFull(c.br, c2); err != nil {
		return fmt.Errorf("read C2: %w", err)
	}
	_ = c.nc.SetDeadline(time.Time{})
	return nil
}

// clientHandshake does the plain handshake, which every server accepts.
func (c *Conn) clientHandshake() error {
	if c.cfg.HandshakeTimeout > 0 {
		_ = c.nc.SetDeadline(time.Now().Add(c.cfg.HandshakeTimeout))
	}
	c0c1 := make([]byte, 1+hsSize)
	c0c1[0] = 3
	binary.BigEndian.PutUint32(c0c1[1:5], uint32(time.Now().Unix()))
	_, _ = rand.Read(c0c1[9:])
	if _, err := c.bw.Write(c0c1); err != nil {
		return fmt.Errorf("write C0C1: %w", err)
	}
	if err := c.bw.Flush(); err != nil {
		return fmt.Errorf("write C0C1: %w", err)
	}
	s := make([]byte, 1+2*hsSize)
	if _, err := io.ReadFull(c.br, s); err != nil {
		return fmt.Errorf("read S0S1S2: %w", err)
	}
	if s[0] != 3 {
		return fmt.Errorf("%w: S0 version %d", errBadHandshake, s[0])
	}
	if _, err := c.bw.Write(s[1 : 1+hsSize]); err != nil {
		return fmt.Errorf("write C2: %w", err)
	}
	if err := c.bw.Flush(); err != nil {
		return fmt.Errorf("write C2: %w", err)
	}
	_ = c.nc.SetDeadline(time.Time{})
	return nil
}
