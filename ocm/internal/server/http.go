package server

import (
	"encoding/json"
	"net/http"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// HTTPHandler serves the read-only JSON API (protojson of the gRPC replies):
//
//	GET /api/v1/nodes                          ListNodesResponse (?role=origin|edge&state=ready|draining)
//	GET /api/v1/streams                        ListStreamsResponse (?limit=&page_token=&node=&app=&vhost=)
//	GET /api/v1/streams/{vhost}/{app}/{name}   LookupStreamResponse, 404 when not owned
//
// Errors are {"code": "NOT_FOUND", "message": "..."} with the matching HTTP
// status.
func (s *Server) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/nodes", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		req := &ocmv1.ListNodesRequest{}
		if v := q.Get("role"); v != "" {
			role, ok := ocmv1.NodeRole_value["NODE_ROLE_"+upper(v)]
			if !ok {
				writeErr(w, status.Errorf(codes.InvalidArgument, "role %q: want origin or edge", v))
				return
			}
			req.Role = ocmv1.NodeRole(role)
		}
		if v := q.Get("state"); v != "" {
			st, ok := ocmv1.NodeState_value["NODE_STATE_"+upper(v)]
			if !ok {
				writeErr(w, status.Errorf(codes.InvalidArgument, "state %q: want ready or draining", v))
				return
			}
			req.State = ocmv1.NodeState(st)
		}
		resp, err := s.ListNodes(r.Context(), req)
		writeResp(w, resp, err)
	})
	mux.HandleFunc("GET /api/v1/streams", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		req := &ocmv1.ListStreamsRequest{PageToken: q.Get("page_token"), OwnerNodeId: q.Get("node"), App: q.Get("app"), Vhost: q.Get("vhost")}
		if v := q.Get("limit"); v != "" {
			n, err := strconv.ParseInt(v, 10, 32)
			if err != nil {
				writeErr(w, status.Errorf(codes.InvalidArgument, "limit %q is not a number", v))
				return
			}
			req.PageSize = int32(n)
		}
		resp, err := s.ListStreams(r.Context(), req)
		writeResp(w, resp, err)
	})
	mux.HandleFunc("GET /api/v1/streams/{vhost}/{app}/{name}", func(w http.ResponseWriter, r *http.Request) {
		resp, err := s.LookupStream(r.Context(), &ocmv1.LookupStreamRequest{Key: &ocmv1.StreamKey{
			Vhost: r.PathValue("vhost"), App: r.PathValue("app"), Name: r.PathValue("name")}})
		writeResp(w, resp, err)
	})
	return mux
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

var jsonOpts = protojson.MarshalOptions{EmitUnpopulated: false, UseProtoNames: false}

func writeResp(w http.ResponseWriter, m proto.Message, err error) {
	if err != nil {
		writeErr(w, err)
		return
	}
	b, err := jsonOpts.Marshal(m)
	if err != nil {
		writeErr(w, status.Errorf(codes.Internal, "encode: %v", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func writeErr(w http.ResponseWriter, err error) {
	st := status.Convert(err)
	code := http.StatusInternalServerError
	switch st.Code() {
	case codes.InvalidArgument:
		code = http.StatusBadRequest
	case codes.NotFound:
		code = http.StatusNotFound
	case codes.AlreadyExists:
		code = http.StatusConflict
	case codes.FailedPrecondition:
		code = http.StatusPreconditionFailed
	case codes.Unavailable:
		code = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"code": codeName(st.Code()), "message": st.Message()})
}

func codeName(c codes.Code) string {
	// codes.Code.String() is "NotFound"; the JSON API uses the proto enum
	// spelling.
	names := map[codes.Code]string{codes.InvalidArgument: "INVALID_ARGUMENT", codes.NotFound: "NOT_FOUND",
		codes.AlreadyExists: "ALREADY_EXISTS", codes.FailedPrecondition: "FAILED_PRECONDITION",
		codes.Unavailable: "UNAVAILABLE", codes.Internal: "INTERNAL"}
	if n, ok := names[c]; ok {
		return n
	}
	return upper(c.String())
}
