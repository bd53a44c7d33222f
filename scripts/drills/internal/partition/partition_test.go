package partition

import (
	"encoding/binary"
	"math"
	"testing"
	"time"
)

func amfString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func TestAMFField(t *testing.T) {
	// onMetaData: ECMA array with a string and a number property.
	b := []byte{0x02}
	b = amfString(b, "onMetaData")
	b = append(b, 0x08, 0, 0, 0, 2)
	b = amfString(b, "livecluster_origin")
	b = append(b, 0x02)
	b = amfString(b, "origin-b")
	b = amfString(b, "livecluster_epoch")
	b = append(b, 0x00)
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(22))
	b = append(b, 0, 0, 9)
	if v, ok := amfField(b, "livecluster_origin"); !ok || v != "origin-b" {
		t.Errorf("origin = %q, %v; want origin-b", v, ok)
	}
	if v, ok := amfField(b, "livecluster_epoch"); !ok || v != "22" {
		t.Errorf("epoch = %q, %v; want 22", v, ok)
	}
	if v, ok := amfField(b, "width"); ok {
		t.Errorf("absent field found: %q", v)
	}
	if _, ok := amfField(b[:len(b)-20], "livecluster_epoch"); ok {
		t.Error("truncated number decoded")
	}
}

func TestServing(t *testing.T) {
	t0 := time.Unix(1000, 0)
	a, b := source{"origin-a", 10}, source{"origin-b", 22}
	at := func(ms int, s source) frame { return frame{At: t0.Add(time.Duration(ms) * time.Millisecond), Src: s} }

	// A until its fence, silence, then B: one origin at any instant.
	clean := []frame{at(0, a), at(40, a), at(5000, a), at(9000, b), at(9040, b), at(30, a)}
	two, back, firstB := serving(clean, "origin-b")
	if two != 0 || back != 0 || !firstB.Equal(t0.Add(9*time.Second)) {
		t.Errorf("clean handover: two %d, back %d, first B %v", two, back, firstB.Sub(t0))
	}
	// One player still gets A after another got B: both flagged.
	split := append(clean, at(9010, a), at(9500, a))
	two, back, _ = serving(split, "origin-b")
	if two != 1 || back != 2 {
		t.Errorf("split brain: two %d, back %d; want 1, 2", two, back)
	}
}

func TestPullSamplerCheck(t *testing.T) {
	s := &pullSampler{samples: []pullSample{
		{Owners: []source{{"origin-a", 10}}},
		{Owners: nil}, // held: no connected pull
		{Owners: []source{{"origin-b", 22}}},
		{Owners: []source{{"origin-b", 22}, {"origin-a", 10}}},
		{Owners: []source{{"origin-a", 10}}},
	}}
	two, back, n, owners := s.check()
	if two != 1 || back != 2 || n != 5 {
		t.Errorf("check = two %d, back %d, n %d; want 1, 2, 5", two, back, n)
	}
	want := []string{"origin-a@10", "origin-b@22", "origin-a@10"}
	if len(owners) != len(want) {
		t.Fatalf("owners %v, want %v", owners, want)
	}
	for i := range want {
		if owners[i] != want[i] {
			t.Fatalf("owners %v, want %v", owners, want)
		}
	}
}
