package procstat

import (
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// The command name holds spaces and a ')': fields count from the last ')'.
	line := "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 1000 123456789 3000\n"
	got, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if got != 3250*time.Millisecond {
		t.Fatalf("cpu = %v, want 3.25s (325 ticks)", got)
	}
	for _, bad := range []string{"", "1234 (x", "1 (x) S 1 2 3", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 u s"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) succeeded", bad)
		}
	}
}

func TestParseStatus(t *testing.T) {
	got, err := parseStatus([]byte("Name:\tx\nVmPeak:\t 9 kB\nVmRSS:\t    2048 kB\n"))
	if err != nil || got != 2048<<10 {
		t.Fatalf("rss = %d, %v", got, err)
	}
	if got, err := parseStatus([]byte("Name:\tzombie\nState:\tZ\n")); err != nil || got != 0 {
		t.Fatalf("zombie: %d, %v", got, err)
	}
	if _, err := parseStatus([]byte("VmRSS:\t12 MB\n")); err == nil {
		t.Fatal("accepted a unit other than kB")
	}
}

func TestReadSelf(t *testing.T) {
	before, err := Read("self")
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(60 * time.Millisecond); time.Now().Before(end); {
	}
	after, err := Read("self")
	if err != nil {
		t.Fatal(err)
	}
	if after.CPU <= before.CPU || after.RSS <= 0 {
		t.Fatalf("busy 60 ms: cpu %v → %v, rss %d", before.CPU, after.CPU, after.RSS)
	}
	if _, err := Read("999999999"); err == nil {
		t.Fatal("read a process that does not exist")
	}
}
