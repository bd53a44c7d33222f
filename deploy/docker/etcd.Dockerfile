# livecluster/etcd: the etcd server (go.etcd.io/etcd/server/v3) for a bundled livecluster etcd cluster (client 2379, peer 2380; data in /data)
#
# Built by scripts/images.sh, which compiles /etcd on the host (static,
# CGO_ENABLED=0, -trimpath, version stamped with -ldflags) and prepares the
# build context: the binary, rootfs/ (for BASE=scratch: /etc/passwd and
# /etc/group with the nonroot user 65532, CA certificates, /tmp 1777; empty
# for a distroless base, which has them) and empty/ (an empty directory).
# Nothing is compiled here and the image has no shell: the health check and
# the drain are subcommands of the binary. See docs/docker.md.
ARG BASE=gcr.io/distroless/static-debian12:nonroot
FROM ${BASE}

COPY rootfs/ /
# WORKDIR /data is owned by nonroot, so relative paths in the defaults work
# with a plain docker run, and a named volume mounted on it starts with that
# owner.
COPY --chown=65532:65532 empty/ /data/
COPY etcd /etcd

USER 65532:65532
WORKDIR /data
EXPOSE 2379 2380
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 CMD ["/etcd", "healthcheck"]
ENTRYPOINT ["/etcd"]

# Last, so a new version or commit only re-labels a cached image.
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
ARG SOURCE=https://github.com/livecluster/livecluster
ARG LICENSES=Apache-2.0
LABEL org.opencontainers.image.title="livecluster/etcd" \
      org.opencontainers.image.description="the etcd server (go.etcd.io/etcd/server/v3) for a bundled livecluster etcd cluster (client 2379, peer 2380; data in /data)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="${LICENSES}" \
      org.opencontainers.image.created="${CREATED}"
