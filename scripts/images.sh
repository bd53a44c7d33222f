#!/usr/bin/env bash
# Builds the container images livecluster/ocm, livecluster/origin,
# livecluster/edge and livecluster/etcd from deploy/docker/, each tagged
# $VERSION and latest, and prints their names and sizes.
#
#   scripts/images.sh                      all four
#   scripts/images.sh ocm edge             only these
#   BASE=gcr.io/distroless/static-debian12:nonroot scripts/images.sh
#
# The binaries are compiled here, on the host, not inside Docker: static
# (CGO_ENABLED=0), -trimpath, stripped, with -X main.version=$VERSION. The
# Dockerfiles only COPY them, so no Go image is pulled and a rebuild with
# nothing changed is fast (Go's build cache, then Docker's layer cache: the
# same bytes give the same layers).
#
# BASE defaults to scratch here, not to the Dockerfiles' distroless default,
# because this machine cannot pull images. For scratch the script adds what
# scratch lacks: /etc/passwd and /etc/group with the distroless "nonroot"
# user (65532), CA certificates from the host, /etc/nsswitch.conf, and /tmp
# with mode 1777. With any other BASE it adds nothing (distroless has them).
#
# Environment:
#   VERSION    image tag and the binaries' version (default: git describe
#              --tags --always --dirty)
#   BASE       base image (default: scratch)
#   CA_BUNDLE  CA certificates for BASE=scratch (default:
#              /etc/ssl/certs/ca-certificates.crt)
#   SOURCE     org.opencontainers.image.source (default: the git remote
#              "origin", else https://github.com/livecluster/livecluster)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ALL=(ocm origin edge etcd)
names=("$@")
[ ${#names[@]} -eq 0 ] && names=("${ALL[@]}")
for n in "${names[@]}"; do
  [[ " ${ALL[*]} " == *" $n "* ]] || { echo "images.sh: unknown image $n (want: ${ALL[*]})" >&2; exit 2; }
done

VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
# A Docker tag is [A-Za-z0-9_.-]{1,128} and cannot start with . or -.
TAG=$(printf '%s' "$VERSION" | tr -c 'A-Za-z0-9_.-' '-' | cut -c1-128)
[[ $TAG =~ ^[A-Za-z0-9_] ]] || TAG="v$TAG"
BASE=${BASE:-scratch}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
# The commit's time, not the build's: the same commit gives the same labels,
# so an unchanged rebuild reuses every cached layer and the same image ID.
CREATED=$(git log -1 --format=%cI 2>/dev/null || echo 1970-01-01T00:00:00Z)
SOURCE=${SOURCE:-$(git remote get-url origin 2>/dev/null || echo https://github.com/livecluster/livecluster)}
OUT=$ROOT/.cache/images

# module directory and main package of each binary
pkg_of() {
  case $1 in
    ocm) echo "ocm ./cmd/ocm" ;;
    origin) echo "origin ./cmd/origin" ;;
    edge) echo "edge ./cmd/edge" ;;
    etcd) echo "ocm ./cmd/etcd" ;;
  esac
}

# rootfs DIR: what the base lacks (see the header).
rootfs() {
  local d=$1
  rm -rf "$d"
  mkdir -p "$d"
  [ "$BASE" = scratch ] || return 0
  [ -s "$CA_BUNDLE" ] || { echo "images.sh: no CA bundle at $CA_BUNDLE (set CA_BUNDLE)" >&2; exit 1; }
  mkdir -p "$d/etc/ssl/certs" "$d/tmp"
  chmod 1777 "$d/tmp"
  # The same entries as distroless's static image.
  cat >"$d/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat >"$d/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
  echo 'hosts: files dns' >"$d/etc/nsswitch.conf"
  cp "$CA_BUNDLE" "$d/etc/ssl/certs/ca-certificates.crt"
  chmod 0644 "$d"/etc/passwd "$d"/etc/group "$d"/etc/nsswitch.conf "$d/etc/ssl/certs/ca-certificates.crt"
}

echo "images.sh: version $VERSION (tag $TAG), base $BASE" >&2
for n in "${names[@]}"; do
  read -r mod pkg <<<"$(pkg_of "$n")"
  ctx=$OUT/$n
  mkdir -p "$ctx"
  echo "images.sh: go build $n" >&2
  (cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o "$ctx/$n" "$pkg")
  rootfs "$ctx/rootfs"
  rm -rf "$ctx/empty" && mkdir -p "$ctx/empty"
  cp "deploy/docker/$n.Dockerfile" "$ctx/Dockerfile"
  echo "images.sh: docker build livecluster/$n" >&2
  # The legacy builder prints a deprecation notice on every build; keep
  # stderr for errors only when the build fails.
  if ! log=$(docker build -q -t "livecluster/$n:$TAG" -t "livecluster/$n:latest" \
      --build-arg "BASE=$BASE" --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" \
      --build-arg "CREATED=$CREATED" --build-arg "SOURCE=$SOURCE" "$ctx" 2>&1); then
    echo "$log" >&2
    echo "images.sh: docker build livecluster/$n failed" >&2
    exit 1
  fi
done

echo
printf '%-36s %10s %s\n' IMAGE SIZE ID
for n in "${names[@]}"; do
  read -r id size < <(docker image inspect -f '{{.Id}} {{.Size}}' "livecluster/$n:$TAG")
  awk -v n="livecluster/$n:$TAG" -v s="$size" -v id="${id:7:12}" 'BEGIN { printf "%-36s %7.1f MB %s\n", n, s / 1e6, id }'
done
echo "(each also tagged livecluster/<name>:latest)"
