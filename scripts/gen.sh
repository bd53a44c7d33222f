#!/usr/bin/env bash
# Regenerates the Go code for proto/ with the pinned buf and plugins.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/tools.sh
tools_install buf protoc-gen-go protoc-gen-go-grpc
buf lint
buf generate
