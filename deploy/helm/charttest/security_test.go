package charttest

import (
	"strings"
	"testing"
)

// TestSecurity: security.tls and security.tokens mount each component's
// Secret as a directory (so renewals arrive through the ..data swap),
// point the config at the files with the identity rules of
// docs/security.md, keep the probes working (HTTPS with adminPort), and
// give the helm test pod --grpc-tls.
func TestSecurity(t *testing.T) {
	// Off by default: no TLS, no token in any config.
	r := mustRender(t)
	for _, w := range workloads {
		c := configOf(t, r, w.component)
		if c["admin"] != nil || dig(c, "grpc", "tls") != nil || dig(c, "ocm", "tls") != nil || c["auth"] != nil {
			t.Errorf("%s: security keys set by default: %v", w.component, c)
		}
	}
	if _, err := render(t, "--set", "security.tls.enabled=true"); err == nil || !strings.Contains(err.Error(), ".existingSecret: required when security.tls.enabled") {
		t.Errorf("tls without Secrets: %v", err)
	}

	r = mustRender(t, "--set", "security.tls.enabled=true", "--set", "security.tls.adminPort=true",
		"--set", "security.tls.ocm.existingSecret=ocm-tls", "--set", "security.tls.origin.existingSecret=origin-tls",
		"--set", "security.tls.edge.existingSecret=edge-tls", "--set", "security.tokens.existingSecret=lc-tokens")
	ocm := configOf(t, r, "ocm")
	if dig(ocm, "grpc", "tls", "clientCAFile") != "/etc/livecluster-tls/ca.crt" || dig(ocm, "grpc", "tls", "certFile") != "/etc/livecluster-tls/tls.crt" {
		t.Errorf("ocm grpc.tls %v", dig(ocm, "grpc", "tls"))
	}
	ids := map[string]string{}
	for i := range 3 {
		ids[str(dig(ocm, "auth", "tokens", string(rune('0'+i)), "identity"))] = str(dig(ocm, "auth", "tokens", string(rune('0'+i)), "tokenFile"))
	}
	if ids["origin:*"] != "/etc/livecluster-tokens/origin" || ids["edge:*"] != "/etc/livecluster-tokens/edge" || ids["admin"] != "/etc/livecluster-tokens/admin" {
		t.Errorf("ocm auth.tokens %v", ids)
	}
	if dig(ocm, "auth", "openReads") != nil {
		t.Errorf("ocm auth.openReads set: %v", dig(ocm, "auth"))
	}
	for _, w := range workloads {
		c := configOf(t, r, w.component)
		if dig(c, "admin", "tokenFile") != "/etc/livecluster-tokens/admin" || dig(c, "admin", "tls", "certFile") != "/etc/livecluster-tls/tls.crt" {
			t.Errorf("%s admin %v", w.component, c["admin"])
		}
		pod := dig(r.get(t, w.kind, w.name), "spec", "template", "spec")
		secrets := map[string]string{}
		for _, v := range dig(pod, "volumes").([]any) {
			if s := dig(v, "secret", "secretName"); s != nil {
				secrets[str(dig(v, "name"))] = str(s)
			}
		}
		if secrets["livecluster-tls"] != w.component+"-tls" || secrets["livecluster-tokens"] != "lc-tokens" {
			t.Errorf("%s secret volumes %v", w.component, secrets)
		}
		mounts := map[string]any{}
		for _, m := range container(r.get(t, w.kind, w.name))["volumeMounts"].([]any) {
			mounts[str(dig(m, "name"))] = m
			if dig(m, "subPath") != nil && strings.HasPrefix(str(dig(m, "name")), "livecluster-t") {
				t.Errorf("%s mounts a Secret with subPath: renewals would never arrive", w.component)
			}
		}
		if dig(mounts["livecluster-tls"], "mountPath") != "/etc/livecluster-tls" || dig(mounts["livecluster-tokens"], "mountPath") != "/etc/livecluster-tokens" {
			t.Errorf("%s mounts %v", w.component, mounts)
		}
		for _, p := range []string{"startupProbe", "livenessProbe", "readinessProbe"} {
			if s := dig(container(r.get(t, w.kind, w.name)), p, "httpGet", "scheme"); s != "HTTPS" {
				t.Errorf("%s %s scheme %v with an HTTPS admin port", w.component, p, s)
			}
		}
		if w.component == "ocm" {
			continue
		}
		if dig(c, "ocm", "tls", "certFile") != "/etc/livecluster-tls/tls.crt" || dig(c, "ocm", "tls", "caFile") != "/etc/livecluster-tls/ca.crt" ||
			dig(c, "ocm", "tokenFile") != "/etc/livecluster-tokens/"+w.component || dig(c, "ocm", "address") == nil {
			t.Errorf("%s ocm %v", w.component, c["ocm"])
		}
	}
	if p := r.find("Pod", "lc-livecluster-test-ocm-grpc"); p == nil || !strings.Contains(str(dig(p, "spec", "containers", "0", "args")), "--grpc-tls") {
		t.Errorf("helm test pod without --grpc-tls: %v", p)
	}

	// Tokens alone: HTTP probes, no TLS keys, openReads passes through.
	r = mustRender(t, "--set", "security.tokens.existingSecret=lc-tokens", "--set", "security.openReads=true")
	if c := configOf(t, r, "ocm"); dig(c, "auth", "openReads") != true || dig(c, "grpc", "tls") != nil {
		t.Errorf("tokens only: ocm %v", c)
	}
	for _, w := range workloads {
		if s := dig(container(r.get(t, w.kind, w.name)), "readinessProbe", "httpGet", "scheme"); s != "HTTP" {
			t.Errorf("%s readiness scheme %v without admin TLS", w.component, s)
		}
	}
	if _, err := render(t, "--set", "ocm.config.auth.tokens[0].identity=root"); err == nil {
		t.Error("schema accepted identity root")
	}
}
