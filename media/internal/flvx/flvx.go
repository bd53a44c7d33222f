// Package flvx turns av packets into FLV tag bytes and back. The tag bytes
// are the wire form of HTTP-FLV, and the body of a tag (between the 11-byte
// header and the 4-byte trailer) is exactly an RTMP audio/video/data message
// payload, so one encoding serves both protocols.
package flvx

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/nareix/joy4/av"
	"github.com/nareix/joy4/codec/aacparser"
	"github.com/nareix/joy4/codec/h264parser"
	"github.com/nareix/joy4/format/flv"
	"github.com/nareix/joy4/format/flv/flvio"
)

// ErrCodecChanged is returned by Demuxer.Packet when a new sequence header
// replaced a codec; the caller fetches Streams again and keeps reading.
var ErrCodecChanged = errors.New("flv: codec headers changed")

// EncodeTag serializes a tag with header and trailer into one new slice.
func EncodeTag(tag flvio.Tag, ts int32) []byte {
	var sub [flvio.MaxTagSubHeaderLength]byte
	n := tag.FillHeader(sub[:])
	datalen := n + len(tag.Data)
	b := make([]byte, flvio.TagHeaderLength+datalen+flvio.TagTrailerLength)
	flvio.FillTagHeader(b, tag.Type, datalen, ts)
	copy(b[flvio.TagHeaderLength:], sub[:n])
	copy(b[flvio.TagHeaderLength+n:], tag.Data)
	flvio.FillTagTrailer(b[flvio.TagHeaderLength+datalen:], datalen)
	return b
}

// EncodeRaw serializes an already encoded tag body.
func EncodeRaw(typ uint8, ts int32, body []byte) []byte {
	b := make([]byte, flvio.TagHeaderLength+len(body)+flvio.TagTrailerLength)
	flvio.FillTagHeader(b, typ, len(body), ts)
	copy(b[flvio.TagHeaderLength:], body)
	flvio.FillTagTrailer(b[flvio.TagHeaderLength+len(body):], len(body))
	return b
}

// EncodePacket serializes a media packet of the given codec.
func EncodePacket(pkt av.Packet, codec av.CodecData) []byte {
	tag, ts := flv.PacketToTag(pkt, codec)
	return EncodeTag(tag, ts)
}

// EncodeMetadata serializes an onMetaData script tag.
func EncodeMetadata(meta flvio.AMFMap, ts int32) []byte {
	body := AMFBody("onMetaData", meta)
	return EncodeRaw(flvio.TAG_SCRIPTDATA, ts, body)
}

// AMFBody encodes AMF0 values back to back.
func AMFBody(vals ...interface{}) []byte {
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

// EncodeHeaders returns the metadata tag (nil meta: derived from streams)
// followed by the sequence header of every codec.
func EncodeHeaders(streams []av.CodecData, meta flvio.AMFMap, ts int32) ([][]byte, error) {
	if meta == nil {
		var err error
		if meta, err = flv.NewMetadataByStreams(streams); err != nil {
			return nil, fmt.Errorf("build metadata: %w", err)
		}
	}
	out := [][]byte{EncodeMetadata(meta, ts)}
	for _, s := range streams {
		tag, ok, err := flv.CodecDataToTag(s)
		if err != nil {
			return nil, fmt.Errorf("encode codec header: %w", err)
		}
		if ok {
			out = append(out, EncodeTag(tag, ts))
		}
	}
	return out, nil
}

// TagInfo splits serialized tag bytes into type, timestamp and body.
func TagInfo(b []byte) (typ uint8, ts uint32, body []byte, err error) {
	if len(b) < flvio.TagHeaderLength {
		return 0, 0, nil, fmt.Errorf("flv tag of %d bytes is too short", len(b))
	}
	n := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
	if len(b) < flvio.TagHeaderLength+n {
		return 0, 0, nil, fmt.Errorf("flv tag body of %d bytes is truncated", n)
	}
	ts = uint32(b[4])<<16 | uint32(b[5])<<8 | uint32(b[6]) | uint32(b[7])<<24
	return b[0], ts, b[flvio.TagHeaderLength : flvio.TagHeaderLength+n], nil
}

// ParseAMF decodes AMF0 values back to back; a malformed value ends the list
// with an error (the values before it are returned). Allocation and nesting
// are bounded by the input's length, whatever a peer claims.
func ParseAMF(b []byte) (vals []interface{}, err error) {
	for off := 0; off < len(b); {
		v, n, err := parseAMF0(b[off:], 0)
		if err != nil {
			return vals, fmt.Errorf("parse AMF0 at byte %d: %w", off, err)
		}
		vals = append(vals, v)
		off += n
	}
	return vals, nil
}

// MetadataFromScript extracts the onMetaData object of a script body, with or
// without the @setDataFrame wrapper publishers use. ok is false for other data.
func MetadataFromScript(body []byte) (flvio.AMFMap, bool) {
	vals, _ := ParseAMF(body)
	if len(vals) > 0 && vals[0] == "@setDataFrame" {
		vals = vals[1:]
	}
	if len(vals) < 2 || vals[0] != "onMetaData" {
		return nil, false
	}
	switch m := vals[1].(type) {
	case flvio.AMFMap:
		return m, true
	case flvio.AMFECMAArray:
		return flvio.AMFMap(m), true
	}
	return nil, false
}

// ErrUnsupportedCodec is returned by Demuxer.Push for a video tag whose
// codec is not H.264 (FLV codec id 7); the tag is not decoded.
var ErrUnsupportedCodec = errors.New("unsupported codec")

// Demuxer turns a sequence of FLV tags (from RTMP messages or an FLV byte
// stream) into codec data, metadata and av packets. Not safe for concurrent use.
type Demuxer struct {
	prober  *flv.Prober
	meta    flvio.AMFMap
	probed  bool
	streams []av.CodecData
	ready   []av.Packet
}

// NewDemuxer returns an empty demuxer.
func NewDemuxer() *Demuxer { return &Demuxer{prober: &flv.Prober{}} }

// Probed reports whether Streams is known.
func (d *Demuxer) Probed() bool { return d.probed }

// Streams returns the codecs once probed.
func (d *Demuxer) Streams() []av.CodecData { return d.streams }

// Metadata returns the last onMetaData seen (may be nil).
func (d *Demuxer) Metadata() flvio.AMFMap { return d.meta }

// Push feeds one tag body of the given FLV tag type. It returns
// ErrCodecChanged when a sequence header replaced a probed codec, and
// ErrUnsupportedCodec (the tag dropped, the demuxer unchanged) for a video
// tag that is not H.264.
func (d *Demuxer) Push(typ uint8, ts int32, body []byte) (err error) {
	// joy4's codec parsers (2018) index into peer-supplied sequence headers;
	// a panic there must cost one connection, not the process.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed FLV tag (type %d): %v", typ, r)
		}
	}()
	switch typ {
	case flvio.TAG_SCRIPTDATA:
		if m, ok := MetadataFromScript(body); ok {
			d.meta = m
			if !d.probed {
				_, d.prober.HasVideo = m["videocodecid"]
				_, d.prober.HasAudio = m["audiocodecid"]
			}
		}
		return nil
	case flvio.TAG_AUDIO, flvio.TAG_VIDEO:
	default:
		return nil
	}
	// joy4 reads every video tag as H.264 whatever its codec id says: an
	// HEVC or VP6 tag failed as "h264 seqhdr invalid", or its bytes were
	// passed on to players and the HLS muxer as H.264. Say what it is.
	if typ == flvio.TAG_VIDEO && len(body) > 0 && body[0]&0x0f != flvio.VIDEO_H264 {
		return fmt.Errorf("%w: video codec id %d (only H.264, id 7, is carried)", ErrUnsupportedCodec, body[0]&0x0f)
	}
	tag := flvio.Tag{Type: typ}
	n, err := tag.ParseHeader(body)
	if err != nil {
		return fmt.Errorf("parse flv tag header: %w", err)
	}
	if n > len(body) {
		return fmt.Errorf("flv tag of %d bytes is truncated", len(body))
	}
	tag.Data = body[n:]
	if !d.probed {
		if err := d.prober.PushTag(tag, ts); err != nil {
			return err
		}
		if d.prober.Probed() {
			d.probed = true
			d.streams = d.prober.Streams
			for !d.prober.Empty() {
				d.ready = append(d.ready, d.prober.PopPacket())
			}
		}
		return nil
	}
	if changed, err := d.seqHeader(tag); changed || err != nil {
		return err
	}
	if pkt, ok := d.prober.TagToPacket(tag, ts); ok && int(pkt.Idx) < len(d.streams) {
		d.ready = append(d.ready, pkt)
	}
	return nil
}

// seqHeader swaps in a new codec when a different sequence header arrives
// after probing (a republish upstream with new encoder settings).
func (d *Demuxer) seqHeader(tag flvio.Tag) (bool, error) {
	var idx int
	var c av.CodecData
	switch {
	case tag.Type == flvio.TAG_VIDEO && tag.AVCPacketType == flvio.AVC_SEQHDR:
		if !d.prober.GotVideo {
			return true, nil
		}
		idx = d.prober.VideoStreamIdx
		old := d.streams[idx].(h264parser.CodecData)
		if bytes.Equal(old.AVCDecoderConfRecordBytes(), tag.Data) {
			return true, nil
		}
		nc, err := h264parser.NewCodecDataFromAVCDecoderConfRecord(tag.Data)
		if err != nil {
			return true, fmt.Errorf("parse h264 sequence header: %w", err)
		}
		c = nc
	case tag.Type == flvio.TAG_AUDIO && tag.SoundFormat == flvio.SOUND_AAC && tag.AACPacketType == flvio.AAC_SEQHDR:
		if !d.prober.GotAudio {
			return true, nil
		}
		idx = d.prober.AudioStreamIdx
		old, ok := d.streams[idx].(aacparser.CodecData)
		if ok && bytes.Equal(old.MPEG4AudioConfigBytes(), tag.Data) {
			return true, nil
		}
		nc, err := aacparser.NewCodecDataFromMPEG4AudioConfigBytes(tag.Data)
		if err != nil {
			return true, fmt.Errorf("parse aac sequence header: %w", err)
		}
		c = nc
	default:
		return false, nil
	}
	streams := append([]av.CodecData(nil), d.streams...)
	streams[idx] = c
	d.streams = streams
	return true, ErrCodecChanged
}

// Packet pops the next ready packet.
func (d *Demuxer) Packet() (av.Packet, bool) {
	if len(d.ready) == 0 {
		return av.Packet{}, false
	}
	p := d.ready[0]
	if len(d.ready) == 1 {
		// Reuse the backing array: usually one packet is pushed and popped
		// at a time, and re-slicing from the front would allocate anew for
		// every packet.
		d.ready[0] = av.Packet{}
		d.ready = d.ready[:0]
	} else {
		d.ready = d.ready[1:]
	}
	return p, true
}
