package ocm_test

import (
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// The moment the OCM says it is ready (what /readyz answers), its
// grpc.health.v1 says SERVING too: a helm test pod or a load balancer asking
// right after readiness must not see NOT_SERVING. They once disagreed for up
// to a second, because gRPC health followed readiness only on the probe's
// next tick.
func TestReadyAndGRPCHealthAgree(t *testing.T) {
	for i := range 5 {
		r := startReplica(t, shared.Endpoints(), newPrefix(t), 10*time.Second)
		if err := r.Ready(); err != nil {
			t.Fatalf("start %d: not ready after WaitReady: %v", i, err)
		}
		cc, err := grpc.NewClient(r.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := healthpb.NewHealthClient(cc).Check(ctxT(t, 5*time.Second), &healthpb.HealthCheckRequest{})
		_ = cc.Close()
		if err != nil {
			t.Fatalf("start %d: health check: %v", i, err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("start %d: Ready() is nil but grpc health says %v", i, resp.GetStatus())
		}
		r.Stop()
	}
}
