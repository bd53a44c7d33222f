// Package media is the shared streaming engine of livecluster: it holds no
// code itself, only the sub-packages the origin and edge binaries build on.
//
//   - stream: the seam every protocol plugs into: Source (an ingest),
//     Pump (the one loop feeding a Source into a hub, codec changes
//     included) and PacketSink/PlayPackets (a playback that needs packets).
//   - hub: one publisher, many readers; GOP cache, serialize-once fan-out,
//     slow-reader skipping, source splicing, a registry of hubs.
//   - rtmp: RTMP server and client connection layer (handshake, chunking,
//     AMF0 commands) with deadlines, size limits and cancellation.
//   - httpflv: HTTP-FLV serving from a hub, and an HTTP-FLV pull client.
//   - hls: HLS segmenter writing MPEG-TS segments and playlists.
//
// media knows nothing of the cluster (OCM, etcd, the node runtime); stream
// keys come from the streamkey leaf module.
package media
