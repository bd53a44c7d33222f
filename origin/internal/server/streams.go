package server

import (
	"strconv"
	"time"

	"github.com/nareix/joy4/codec/aacparser"
	"github.com/nareix/joy4/codec/h264parser"

	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"

	"github.com/livecluster/livecluster/origin/internal/api"
	"github.com/livecluster/livecluster/origin/internal/clients"
)

// streamOf returns the API id of the stream a client belongs to (its
// publisher's client id), or "".
func (s *Server) streamOf(c clients.Snapshot) string { return s.pubs.PublisherOf(c.Key) }

// apiStreams describes the publishes for /api/v1/streams.
func (s *Server) apiStreams() []api.Stream {
	list := s.pubs.List()
	out := make([]api.Stream, 0, len(list))
	for _, p := range list {
		st, k := p.Hub, p.Request.Key
		live := time.Since(p.Started)
		as := api.Stream{
			ID: p.ID, Name: k.Name, Vhost: k.Vhost, App: k.App, TcURL: p.Request.TcURL,
			URL: "/" + k.App + "/" + k.Name, LiveMs: p.Started.UnixMilli(), Clients: st.Readers + 1,
			Frames: p.Frames, SendBytes: st.BytesOut, Skipped: st.Skipped, Dropped: st.Dropped,
			Owner: api.Owner{
				Epoch: p.Claim.Epoch(), PublishPath: pathName(p.Claim.Path), ForwardedBy: p.Claim.ForwardedBy,
				Since: p.Claim.Since().UTC().Format(time.RFC3339Nano),
			},
		}
		if p.Request.BytesIn != nil {
			as.RecvBytes = p.Request.BytesIn()
		}
		if sec := live.Seconds(); sec > 0 {
			as.Kbps = api.Kbps{Recv30s: int64(float64(as.RecvBytes*8) / sec / 1000), Send30s: int64(float64(as.SendBytes*8) / sec / 1000)}
		}
		as.Publish.Active, as.Publish.CID = true, p.ID
		for _, c := range p.Streams {
			switch v := c.(type) {
			case h264parser.CodecData:
				as.Video = &api.Video{Codec: "H264", Profile: avcProfile(v.RecordInfo.AVCProfileIndication),
					Level: strconv.FormatFloat(float64(v.RecordInfo.AVCLevelIndication)/10, 'f', 1, 64),
					Width: v.Width(), Height: v.Height()}
			case aacparser.CodecData:
				as.Audio = &api.Audio{Codec: "AAC", SampleRate: v.SampleRate(), Channel: v.ChannelLayout().Count(),
					Profile: aacProfile(v.Config.ObjectType)}
			}
		}
		out = append(out, as)
	}
	return out
}

func pathName(p ocmv1.PublishPath) string {
	if p == ocmv1.PublishPath_PUBLISH_PATH_FORWARDED {
		return "FORWARDED"
	}
	return "DIRECT"
}

func avcProfile(p uint8) string {
	switch p {
	case 66:
		return "Baseline"
	case 77:
		return "Main"
	case 88:
		return "Extended"
	case 100:
		return "High"
	case 110:
		return "High 10"
	case 122:
		return "High 4:2:2"
	case 244:
		return "High 4:4:4"
	}
	return strconv.Itoa(int(p))
}

func aacProfile(ot uint) string {
	switch ot {
	case 1:
		return "Main"
	case 2:
		return "LC"
	case 3:
		return "SSR"
	case 5:
		return "HE"
	case 29:
		return "HEv2"
	}
	return strconv.Itoa(int(ot))
}
