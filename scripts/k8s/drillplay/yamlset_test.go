package main

import "testing"

func TestYAMLSet(t *testing.T) {
	doc := "# c\nnodeId: x\nlog:\n  level: info # was\nhls:\n  enabled: true\n  window: 6\nedge:\n  hls:\n    cacheBytes: 1\n"
	for _, c := range []struct {
		sets []string
		want string
	}{
		{[]string{"log.level=debug"}, "# c\nnodeId: x\nlog:\n  level: debug\nhls:\n  enabled: true\n  window: 6\nedge:\n  hls:\n    cacheBytes: 1\n"},
		{[]string{"hls.enabled=false", "edge.hls.cacheBytes=2"}, "# c\nnodeId: x\nlog:\n  level: info # was\nhls:\n  enabled: false\n  window: 6\nedge:\n  hls:\n    cacheBytes: 2\n"},
		{[]string{"shutdown.startWait=1s"}, doc + "shutdown:\n  startWait: 1s\n"},
		{[]string{"hls.fragment=3s"}, "# c\nnodeId: x\nlog:\n  level: info # was\nhls:\n  enabled: true\n  window: 6\n  fragment: 3s\nedge:\n  hls:\n    cacheBytes: 1\n"},
	} {
		got, err := yamlSet(doc, c.sets)
		if err != nil {
			t.Fatalf("%v: %v", c.sets, err)
		}
		if got != c.want {
			t.Errorf("%v:\n%s\nwant\n%s", c.sets, got, c.want)
		}
	}
	if _, err := yamlSet("log: {level: info}\n", []string{"log.level=debug"}); err == nil {
		t.Error("flow mapping on the path accepted")
	}
	if got, _ := yamlSet("", []string{"log.level=debug"}); got != "log:\n  level: debug\n" {
		t.Errorf("empty doc: %q", got)
	}
}
