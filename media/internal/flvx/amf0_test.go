package flvx

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/nareix/joy4/av"
	"github.com/nareix/joy4/format/flv/flvio"
)

func encodeAMF(vals ...any) []byte {
	n := 0
	for _, v := range vals {
		n += flvio.LenAMF0Val(v)
	}
	b := make([]byte, n)
	off := 0
	for _, v := range vals {
		off += flvio.FillAMF0Val(b[off:], v)
	}
	return b
}

// TestParseAMFRoundTrip decodes what joy4's encoder writes (the encoder
// our RTMP layer and every FLV muxer use) into the same values.
func TestParseAMFRoundTrip(t *testing.T) {
	in := []any{
		"connect", 1.0, true, nil,
		flvio.AMFMap{"app": "live", "tcUrl": "rtmp://h/live", "fpad": false, "n": 3.5},
		flvio.AMFArray{1.0, "two", flvio.AMFMap{"three": 3.0}},
		strings.Repeat("x", 70000), // long string
	}
	got, err := ParseAMF(encodeAMF(in...))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, in) {
		t.Fatalf("round trip:\n got %#v\nwant %#v", got, in)
	}
	// An ECMA array (onMetaData as ffmpeg writes it) decodes to an AMFMap.
	got, err = ParseAMF(encodeAMF("onMetaData", flvio.AMFECMAArray{"width": 1280.0}))
	if err != nil || !reflect.DeepEqual(got[1], flvio.AMFMap{"width": 1280.0}) {
		t.Fatalf("ecma array: %#v, %v", got, err)
	}
}

func TestParseAMFHostile(t *testing.T) {
	deep := bytes.Repeat([]byte{amfStrictArray, 0, 0, 0, 1}, 1000)
	cases := map[string][]byte{
		"strict array claiming 4G values": {amfStrictArray, 0xff, 0xff, 0xff, 0xff, amfNull},
		"long string claiming 4 GiB":      {amfLongString, 0xff, 0xff, 0xff, 0xff, 'a'},
		"string past the end":             {amfString, 0x10, 0x00, 'a'},
		"object without end":              {amfObject, 0, 1, 'k', amfNumber, 0, 0, 0, 0, 0, 0, 0, 0},
		"1000 nested arrays":              deep,
		"unknown marker":                  {0x42},
		"object end alone":                {amfObjectEnd, 0, 0},
		"date NaN":                        {amfDate, 0x7f, 0xf8, 0, 0, 0, 0, 0, 1, 0, 0},
	}
	for name, b := range cases {
		vals, err := ParseAMF(append([]byte{amfString, 0, 1, 'x'}, b...))
		if err == nil {
			t.Errorf("%s: accepted: %#v", name, vals)
			continue
		}
		if len(vals) != 1 || vals[0] != "x" {
			t.Errorf("%s: values before the bad one lost: %#v", name, vals)
		}
	}
}

// TestDemuxerSteadyStateAllocs guards the ingest path: once probed, pushing
// and popping one packet at a time must not allocate for the queue.
func TestDemuxerSteadyStateAllocs(t *testing.T) {
	d := NewDemuxer()
	d.probed = true
	d.ready = make([]av.Packet, 0, 4)
	pkt := av.Packet{Data: []byte{1}}
	allocs := testing.AllocsPerRun(1000, func() {
		d.ready = append(d.ready, pkt)
		if _, ok := d.Packet(); !ok {
			t.Fatal("no packet")
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per push/pop", allocs)
	}
}
