#!/usr/bin/env bash
# Runs every go test -fuzz target of the repository for a short while
# (docs/security.md, "Fuzzing"). Go fuzzes one target per invocation, so
# each is its own `go test`. New corpus entries land in the Go build cache,
# not in testdata/; a crash writes testdata/fuzz/<Target>/<hash>, which is
# then a regression seed that plain `go test` replays: commit it with the fix.
#
#   scripts/fuzz.sh                 each target for FUZZTIME (3s)
#   FUZZTIME=5m scripts/fuzz.sh     longer
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-3s}
# package directory (relative to the repository) and target
TARGETS=(
  "media/rtmp FuzzServerHandshake"
  "media/rtmp FuzzReadMessages"
  "media/hls FuzzTSMuxer"
  "media/internal/flvx FuzzParseAMF"
  "media/internal/flvx FuzzDemuxer"
  "media/internal/flvx FuzzTagInfo"
  "media/httpflv FuzzFLVReader"
  "edge/internal/hlsproxy FuzzPlaylist"
  "node/config FuzzLoad"
  "streamkey FuzzParse"
)
# Every Fuzz function must be listed: a new one is not silently skipped.
found=$(grep -rhoE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]+' . | sed 's/^func //' | sort)
listed=$(for t in "${TARGETS[@]}"; do echo "${t#* }"; done | sort)
if [ "$found" != "$listed" ]; then
  echo "fuzz.sh: the TARGETS list differs from the Fuzz functions in the code:" >&2
  diff <(echo "$listed") <(echo "$found") >&2 || true
  exit 1
fi
for t in "${TARGETS[@]}"; do
  dir=${t% *} name=${t#* }
  echo "--- $name ($dir, $FUZZTIME)"
  # The module is the nearest go.mod above the package.
  # The whole output on a failure (a crasher's input, or the fuzz engine's
  # own error), only its last lines on a pass.
  # -trimpath: the instrumented build's cache entries then do not depend on
  # the checkout's directory, so a fresh clone (CI's) reuses them: the ten
  # targets took 122 s in a new worktree without it, 41 s with it.
  fuzz() { (cd "$dir" && go test -trimpath -run '^$' -fuzz "^$name\$" -fuzztime "$FUZZTIME" -parallel 2 . 2>&1); }
  if ! out=$(fuzz); then
    # Go's fuzz coordinator before 1.27 can fail a target with a bare
    # "context deadline exceeded" as -fuzztime ends, no input having failed
    # (golang/go#75804; seen once here): a real finding writes "Failing
    # input written to". That one runs once more; anything else fails.
    if grep -q 'context deadline exceeded' <<<"$out" && ! grep -q 'Failing input written' <<<"$out"; then
      echo "fuzz.sh: $name: the fuzz engine's deadline race (golang/go#75804), no input found; running it again" >&2
      out=$(fuzz) || { echo "$out"; echo "fuzz.sh: $name failed (output above)" >&2; exit 1; }
    else
      echo "$out"
      echo "fuzz.sh: $name failed (output above)" >&2
      exit 1
    fi
  fi
  echo "$out" | tail -3
done
