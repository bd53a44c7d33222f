package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livecluster/livecluster/node/proctest"
)

// TestGRPCurl runs the grpcurl commands the README shows against a real ocm
// process with its embedded etcd: without proto files, through reflection.
func TestGRPCurl(t *testing.T) {
	grpcurl := proctest.Tool(t, "LIVECLUSTER_GRPCURL", "grpcurl")
	if testing.Short() {
		t.Skip("builds and runs the ocm binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin, err := proctest.Build(ctx, dir, "github.com/livecluster/livecluster/ocm/cmd/ocm")
	if err != nil {
		t.Fatal(err)
	}
	grpcAddr, adminAddr := proctest.FreeAddr(t), proctest.FreeAddr(t)
	cfg := filepath.Join(dir, "ocm.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
nodeId: ocm-test
adminListen: %q
grpc:
  listen: %q
etcd:
  dataDir: %q
  clientURL: http://%s
  peerURL: http://%s
shutdown:
  startWait: 100ms
  finalWait: 100ms
`, adminAddr, grpcAddr, filepath.Join(dir, "etcd"), proctest.FreeAddr(t), proctest.FreeAddr(t)))
	ocm := proctest.Start(t, "ocm", bin, "--config", cfg)
	proctest.WaitHTTP(t, "http://"+adminAddr+"/readyz", 200, 30*time.Second)

	run := func(args ...string) (string, error) {
		t.Helper()
		cmd := exec.CommandContext(ctx, grpcurl, append([]string{"-plaintext"}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Fatalf("grpcurl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	const svc = "livecluster.ocm.v1.OCMService"

	// What the chart's `helm test` pod runs against the OCM Service.
	if out, err := exec.CommandContext(ctx, bin, "healthcheck", "--grpc", grpcAddr).CombinedOutput(); err != nil {
		t.Errorf("ocm healthcheck --grpc %s: %v\n%s", grpcAddr, err, out)
	}

	out := must(grpcAddr, "list")
	for _, want := range []string{svc, "grpc.health.v1.Health"} {
		if !strings.Contains(out, want) {
			t.Errorf("list: %q missing in\n%s", want, out)
		}
	}
	out = must(grpcAddr, "describe", svc)
	for _, want := range []string{"rpc LookupStream", "rpc WatchStreams", "stream .livecluster.ocm.v1.WatchStreamsResponse"} {
		if !strings.Contains(out, want) {
			t.Errorf("describe: %q missing in\n%s", want, out)
		}
	}
	out = must(grpcAddr, "describe", "livecluster.ocm.v1.StreamKey")
	if !strings.Contains(out, "string vhost = 1;") {
		t.Errorf("describe StreamKey:\n%s", out)
	}
	if out := must("-d", `{"service":""}`, grpcAddr, "grpc.health.v1.Health/Check"); !strings.Contains(out, "SERVING") {
		t.Errorf("health: %s", out)
	}

	var reg struct {
		LeaseID string `json:"leaseId"`
	}
	out = must("-d", `{"node":{"id":"origin-a","role":"NODE_ROLE_ORIGIN","addresses":{"rtmp":"127.0.0.1:1935","http":"127.0.0.1:8080"}}}`,
		grpcAddr, svc+"/Register")
	if err := json.Unmarshal([]byte(out), &reg); err != nil || reg.LeaseID == "" {
		t.Fatalf("Register: %v\n%s", err, out)
	}

	// The watch is a long-running grpcurl, as a user would leave it open.
	watch := proctest.Start(t, "grpcurl-watch", grpcurl, "-plaintext", "-max-time", "30",
		"-d", `{"keys":[{"app":"live","name":"s1"}],"initialState":true}`, grpcAddr, svc+"/WatchStreams")
	watch.WaitOutput("EVENT_TYPE_SYNCED", 10*time.Second)

	must("-d", fmt.Sprintf(`{"nodeId":"origin-a","leaseId":%q,"key":{"app":"live","name":"s1"}}`, reg.LeaseID),
		grpcAddr, svc+"/ClaimStream")

	out = must("-d", `{"key":{"app":"live","name":"s1"}}`, grpcAddr, svc+"/LookupStream")
	var lookup struct {
		Stream struct {
			OwnerNodeID string `json:"ownerNodeId"`
			Epoch       string `json:"epoch"`
		} `json:"stream"`
		Owner struct {
			Addresses struct {
				RTMP string `json:"rtmp"`
			} `json:"addresses"`
		} `json:"owner"`
	}
	if err := json.Unmarshal([]byte(out), &lookup); err != nil {
		t.Fatalf("LookupStream: %v\n%s", err, out)
	}
	if lookup.Stream.OwnerNodeID != "origin-a" || lookup.Stream.Epoch == "" || lookup.Owner.Addresses.RTMP != "127.0.0.1:1935" {
		t.Errorf("LookupStream: %+v\n%s", lookup, out)
	}

	out = must("-d", `{"pageSize":10}`, grpcAddr, svc+"/ListStreams")
	if !strings.Contains(out, `"totalSize": 1`) || !strings.Contains(out, `"name": "s1"`) {
		t.Errorf("ListStreams:\n%s", out)
	}
	out = must("-d", `{"role":"NODE_ROLE_ORIGIN"}`, grpcAddr, svc+"/ListNodes")
	if !strings.Contains(out, `"id": "origin-a"`) {
		t.Errorf("ListNodes:\n%s", out)
	}

	watch.WaitOutput(`"ownerNodeId": "origin-a"`, 10*time.Second)
	if !strings.Contains(watch.Output(), "EVENT_TYPE_PUT") {
		t.Errorf("watch output has no PUT:\n%s", watch.Output())
	}

	// Errors come back as status codes with a message, as grpcurl prints them.
	out, err = run("-d", `{"key":{"app":"live","name":"../etc"}}`, grpcAddr, svc+"/LookupStream")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(out, "Code: InvalidArgument") {
		t.Errorf("bad key: err %v, output\n%s", err, out)
	}
	out, _ = run("-d", `{"key":{"app":"live","name":"nope"}}`, grpcAddr, svc+"/LookupStream")
	if !strings.Contains(out, "Code: NotFound") {
		t.Errorf("missing stream: %s", out)
	}
	out, _ = run("-d", fmt.Sprintf(`{"nodeId":"origin-b","leaseId":%q,"key":{"app":"live","name":"s1"}}`, reg.LeaseID),
		grpcAddr, svc+"/ClaimStream")
	if !strings.Contains(out, "Code: NotFound") {
		t.Errorf("claim with an unknown node: %s", out)
	}

	if code := ocm.Stop(15 * time.Second); code != 0 {
		t.Fatalf("ocm exit code %d after SIGTERM", code)
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
