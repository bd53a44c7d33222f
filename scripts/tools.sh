#!/usr/bin/env bash
# Installs the pinned developer tools through the Go module proxy and the
# Debian packages the tests need. Sourced by the other scripts; safe to run
# again: each tool is cached per version under $LIVECLUSTER_TOOLS.
set -euo pipefail

LIVECLUSTER_TOOLS=${LIVECLUSTER_TOOLS:-$HOME/.cache/livecluster/tools}

# name version package
TOOLS=(
  "buf v1.75.0 github.com/bufbuild/buf/cmd/buf"
  "protoc-gen-go v1.36.12 google.golang.org/protobuf/cmd/protoc-gen-go"
  "protoc-gen-go-grpc v1.6.2 google.golang.org/grpc/cmd/protoc-gen-go-grpc"
  "staticcheck v0.8.2 honnef.co/go/tools/cmd/staticcheck"
  "grpcurl v1.9.4 github.com/fullstorydev/grpcurl/cmd/grpcurl"
)

tools_install() {
  local want=("$@") line name version pkg dir
  for line in "${TOOLS[@]}"; do
    read -r name version pkg <<<"$line"
    if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " == *" $name "* ]]; then
      continue
    fi
    dir="$LIVECLUSTER_TOOLS/$name@$version"
    if [ ! -x "$dir/$name" ]; then
      echo "tools: installing $name $version" >&2
      mkdir -p "$dir"
      # Outside the workspace so our go.work does not constrain the tool's
      # own dependencies.
      (cd / && GOWORK=off GOFLAGS=-mod=mod GOBIN="$dir" go install "$pkg@$version")
    fi
    PATH="$dir:$PATH"
  done
  export PATH
}

debian_install() {
  local missing=() p
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "tools: installing Debian packages ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  tools_install "$@"
fi
