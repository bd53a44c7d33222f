package lbchecks

import "testing"

func TestLevels(t *testing.T) {
	log := []byte(`{"level":"ERROR","msg":"before the drill"}
{"level":"INFO","msg":"ok"}
{"level":"WARN","msg":"w"}
not json
{"level":"ERROR","msg":"accept: too many open files"}
`)
	errs, warns, first := levels(log, 1)
	if errs != 1 || warns != 1 || first != `{"level":"WARN","msg":"w"}` {
		t.Fatalf("levels = %d %d %q", errs, warns, first)
	}
}
