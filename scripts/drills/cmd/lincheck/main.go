// Command lincheck checks the OCM call histories of a drill's nodes (the
// JSONL files of LIVECLUSTER_OCM_HISTORY, see node/ocmclient/history.go)
// for linearizability and prints one JSON line: calls, keys, verdict, the
// keys that failed and the visualization written for them.
//
//	lincheck -html /tmp/lin.html origin-a.jsonl origin-b.jsonl edge.jsonl
//
// Exit status: 0 linearizable, 1 not (or the check timed out: porcupine's
// "Unknown"), 2 bad usage or an unreadable history.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/livecluster/livecluster/scripts/drills/internal/lincheck"
)

func main() {
	html := flag.String("html", "", "write porcupine's visualization here when the check fails")
	timeout := flag.Duration("timeout", time.Minute, "give up on one stream key's history after this long (verdict Unknown)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: lincheck [-html FILE] [-timeout D] HISTORY.jsonl...")
		os.Exit(2)
	}
	evs, err := lincheck.ReadFiles(flag.Args()...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lincheck:", err)
		os.Exit(2)
	}
	res, err := lincheck.Check(evs, *timeout, *html)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lincheck:", err)
		os.Exit(2)
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
	if res.Verdict != "Ok" {
		os.Exit(1)
	}
}
