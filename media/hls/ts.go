package hls

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/nareix/joy4/av"
	"github.com/nareix/joy4/codec/aacparser"
	"github.com/nareix/joy4/codec/h264parser"
)

// tsMuxer writes H.264/AAC packets as MPEG-TS by appending to a byte slice
// the caller owns and writes out in large blocks. It replaces joy4's
// ts.Muxer on the ingest path: that one allocates per packet (NALU and
// write vectors) and makes several small writes per 188-byte TS packet,
// which the ingest profile showed as ~15% of the origin's CPU.
//
// The layout is joy4's, so segments look the same to players: PAT on PID
// 0, PMT on 0x1000, the streams on 0x100, 0x101, ... in the order given;
// H.264 access units start with an AUD and keyframes carry SPS and PPS;
// AAC frames get an ADTS header, one PES each. Continuity counters run on
// for the muxer's life, so consecutive segments join cleanly.
type tsMuxer struct {
	streams []tsStream
	pcrPID  uint16
	patCC   uint8
	pmtCC   uint8
	es      []byte // a packet's elementary stream bytes, reused
}

type tsStream struct {
	pid      uint16
	video    bool
	cc       uint8
	aac      aacparser.MPEG4AudioConfig
	sps, pps [][]byte
	nalLen   int // bytes of an AVCC NALU length prefix (1..4)
}

const (
	tsPacketSize   = 188
	tsPMTPID       = 0x1000
	tsFirstPID     = 0x100
	streamTypeH264 = 0x1b
	streamTypeAAC  = 0x0f
)

// setStreams starts a session with these codecs (H.264 and AAC only). The
// continuity counters of PIDs that stay go on.
func (m *tsMuxer) setStreams(codecs []av.CodecData) error {
	old := m.streams
	m.streams = make([]tsStream, 0, len(codecs))
	m.pcrPID = 0
	for i, c := range codecs {
		st := tsStream{pid: uint16(tsFirstPID + i)}
		if i < len(old) {
			st.cc = old[i].cc
		}
		switch c := c.(type) {
		case h264parser.CodecData:
			st.video = true
			st.sps, st.pps = [][]byte{c.SPS()}, [][]byte{c.PPS()}
			if len(c.RecordInfo.SPS) > 0 {
				st.sps, st.pps = c.RecordInfo.SPS, c.RecordInfo.PPS
			}
			st.nalLen = int(c.RecordInfo.LengthSizeMinusOne&3) + 1
			if m.pcrPID == 0 {
				m.pcrPID = st.pid
			}
		case aacparser.CodecData:
			st.aac = c.Config
		default:
			return fmt.Errorf("ts: codec %v not supported", c.Type())
		}
		m.streams = append(m.streams, st)
	}
	if m.pcrPID == 0 && len(m.streams) > 0 {
		m.pcrPID = m.streams[0].pid
	}
	return nil
}

// appendPATPMT appends a PAT and a PMT: the start of every segment.
func (m *tsMuxer) appendPATPMT(dst []byte) []byte {
	var sec [tsPacketSize]byte
	// PAT: program 1 on the PMT PID.
	s := sec[:0]
	s = append(s, 0x00, 0xb0, 0, 0x00, 0x01, 0xc1, 0x00, 0x00)
	s = append(s, 0x00, 0x01, 0xe0|byte(tsPMTPID>>8), byte(tsPMTPID&0xff))
	dst = appendPSI(dst, 0, &m.patCC, s)

	s = sec[:0]
	s = append(s, 0x02, 0xb0, 0, 0x00, 0x01, 0xc1, 0x00, 0x00)
	s = append(s, 0xe0|byte(m.pcrPID>>8), byte(m.pcrPID), 0xf0, 0x00)
	for _, st := range m.streams {
		typ := byte(streamTypeAAC)
		if st.video {
			typ = streamTypeH264
		}
		s = append(s, typ, 0xe0|byte(st.pid>>8), byte(st.pid), 0xf0, 0x00)
	}
	return appendPSI(dst, tsPMTPID, &m.pmtCC, s)
}

// appendPSI completes a section (length, CRC) and appends it as one TS
// packet.
func appendPSI(dst []byte, pid uint16, cc *uint8, s []byte) []byte {
	n := len(s) - 3 + 4 // after the length field, with the CRC
	s[1] = 0xb0 | byte(n>>8)&0x0f
	s[2] = byte(n)
	s = binary.BigEndian.AppendUint32(s, crc32MPEG(s))
	dst = append(dst, 0x47, 0x40|byte(pid>>8)&0x1f, byte(pid), 0x10|*cc&0x0f, 0x00)
	*cc++
	dst = append(dst, s...)
	for i := 5 + len(s); i < tsPacketSize; i++ {
		dst = append(dst, 0xff)
	}
	return dst
}

var (
	audNALU   = []byte{0, 0, 0, 1, 0x09, 0xf0}
	startCode = []byte{0, 0, 0, 1}
)

// appendPacket appends pkt (its Time is the DTS on the 90 kHz timeline,
// CompositionTime the PTS offset) as one PES.
func (m *tsMuxer) appendPacket(dst []byte, pkt av.Packet) ([]byte, error) {
	if int(pkt.Idx) < 0 || int(pkt.Idx) >= len(m.streams) {
		return dst, fmt.Errorf("ts: packet for stream %d of %d", pkt.Idx, len(m.streams))
	}
	st := &m.streams[pkt.Idx]
	es := m.es[:0]
	dts := pkt.Time
	pts := dts
	var hdr [19]byte
	var h []byte
	if st.video {
		pts += pkt.CompositionTime
		es = append(es, audNALU...)
		if pkt.IsKeyFrame && !hasNALU(pkt.Data, st.nalLen, 7) {
			for _, p := range st.sps {
				es = append(append(es, startCode...), p...)
			}
			for _, p := range st.pps {
				es = append(append(es, startCode...), p...)
			}
		}
		es = appendAnnexB(es, pkt.Data, st.nalLen)
		h = pesHeader(hdr[:], 0xe0, 0, pts, dts)
	} else {
		var adts [7]byte
		aacparser.FillADTSHeader(adts[:], st.aac, 1024, len(pkt.Data))
		es = append(append(es, adts[:]...), pkt.Data...)
		h = pesHeader(hdr[:], 0xc0, len(es), pts, pts)
	}
	m.es = es
	pcr := st.pid == m.pcrPID
	rai := !st.video || pkt.IsKeyFrame
	return st.appendPES(dst, h, es, pcr, rai, dts), nil
}

// appendAnnexB appends the NALUs of an AVCC access unit with start codes,
// dropping an AUD (one is written first). Data that is not AVCC with
// nalLen-byte lengths is appended as it is, after a start code unless it
// starts with one.
func appendAnnexB(es, data []byte, nalLen int) []byte {
	start := len(es)
	for b := data; len(b) > 0; {
		nal, rest, ok := nextNALU(b, nalLen)
		if !ok {
			return appendRaw(es[:start], data)
		}
		b = rest
		if nal[0]&0x1f != 9 {
			es = append(append(es, startCode...), nal...)
		}
	}
	return es
}

// hasNALU says whether the AVCC access unit data holds a NALU of type typ.
func hasNALU(data []byte, nalLen int, typ byte) bool {
	for b := data; len(b) > 0; {
		nal, rest, ok := nextNALU(b, nalLen)
		if !ok {
			return false
		}
		if nal[0]&0x1f == typ {
			return true
		}
		b = rest
	}
	return false
}

func nextNALU(b []byte, nalLen int) (nal, rest []byte, ok bool) {
	if len(b) < nalLen {
		return nil, nil, false
	}
	var n int
	for i := 0; i < nalLen; i++ {
		n = n<<8 | int(b[i])
	}
	b = b[nalLen:]
	if n == 0 || n > len(b) {
		return nil, nil, false
	}
	return b[:n], b[n:], true
}

func appendRaw(es, data []byte) []byte {
	if len(data) >= 3 && data[0] == 0 && data[1] == 0 && (data[2] == 1 || len(data) >= 4 && data[2] == 0 && data[3] == 1) {
		return append(es, data...)
	}
	return append(append(es, startCode...), data...)
}

// pesHeader fills h with a PES header: PTS always, DTS when it differs;
// esLen 0 means unbounded (video).
func pesHeader(h []byte, streamID byte, esLen int, pts, dts time.Duration) []byte {
	p, d := to90k(pts), to90k(dts)
	h[0], h[1], h[2], h[3] = 0, 0, 1, streamID
	n := 14
	h[6] = 0x81 // '10' marker, original
	if p != d {
		h[7], h[8] = 0xc0, 10
		putTS(h[9:14], 0x3, p)
		putTS(h[14:19], 0x1, d)
		n = 19
	} else {
		h[7], h[8] = 0x80, 5
		putTS(h[9:14], 0x2, p)
	}
	if esLen > 0 && esLen+n-6 <= 0xffff {
		binary.BigEndian.PutUint16(h[4:6], uint16(esLen+n-6))
	} else {
		h[4], h[5] = 0, 0
	}
	return h[:n]
}

func to90k(t time.Duration) uint64 {
	if t < 0 {
		t = 0
	}
	return uint64(t/time.Microsecond) * 9 / 100 & (1<<33 - 1)
}

func putTS(b []byte, prefix byte, v uint64) {
	b[0] = prefix<<4 | byte(v>>29)&0x0e | 1
	b[1] = byte(v >> 22)
	b[2] = byte(v>>14)&0xfe | 1
	b[3] = byte(v >> 7)
	b[4] = byte(v<<1) | 1
}

// appendPES packetizes one PES (header h, payload es) into TS packets;
// the first carries PCR (pcr) and the random access flag (rai) in its
// adaptation field, the last is stuffed through its adaptation field.
func (st *tsStream) appendPES(dst, h, es []byte, pcr, rai bool, dts time.Duration) []byte {
	total := len(h) + len(es)
	first := true
	for written := 0; written < total; {
		var af [8]byte // flags and PCR
		afn := 0       // adaptation field bytes after its length byte
		if first {
			if pcr || rai {
				afn = 1
				if rai {
					af[0] |= 0x40
				}
				if pcr {
					af[0] |= 0x10
					base := to90k(dts)
					af[1] = byte(base >> 25)
					af[2] = byte(base >> 17)
					af[3] = byte(base >> 9)
					af[4] = byte(base >> 1)
					af[5] = byte(base<<7) | 0x7e
					af[6] = 0
					afn = 7
				}
			}
		}
		room := tsPacketSize - 4
		if afn > 0 {
			room -= 1 + afn
		}
		stuff := 0
		if left := total - written; left < room {
			stuff = room - left
			room = left
		}
		pusi := byte(0)
		if first {
			pusi = 0x40
		}
		ctl := byte(0x10)
		if afn > 0 || stuff > 0 {
			ctl = 0x30
		}
		dst = append(dst, 0x47, pusi|byte(st.pid>>8)&0x1f, byte(st.pid), ctl|st.cc&0x0f)
		st.cc++
		if afn > 0 || stuff > 0 {
			switch {
			case afn == 0 && stuff == 1:
				dst = append(dst, 0) // a length byte alone
				stuff = 0
			case afn == 0:
				dst = append(dst, byte(stuff-1), 0)
				stuff -= 2
			default:
				dst = append(dst, byte(afn+stuff))
				dst = append(dst, af[:afn]...)
			}
			for ; stuff > 0; stuff-- {
				dst = append(dst, 0xff)
			}
		}
		// The payload: what is left of the header, then of es.
		end := written + room
		if written < len(h) {
			dst = append(dst, h[written:min(end, len(h))]...)
		}
		if end > len(h) {
			dst = append(dst, es[max(written-len(h), 0):end-len(h)]...)
		}
		written = end
		first = false
	}
	return dst
}

// crc32MPEG is CRC-32/MPEG-2 (polynomial 0x04c11db7, not reflected), the
// checksum of PSI sections.
func crc32MPEG(b []byte) uint32 {
	crc := uint32(0xffffffff)
	for _, c := range b {
		crc = crc<<8 ^ crcTable[byte(crc>>24)^c]
	}
	return crc
}

var crcTable = func() (t [256]uint32) {
	for i := range t {
		c := uint32(i) << 24
		for j := 0; j < 8; j++ {
			if c&0x80000000 != 0 {
				c = c<<1 ^ 0x04c11db7
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()
