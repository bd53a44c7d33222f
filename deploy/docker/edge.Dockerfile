# livecluster/edge: the livecluster edge (RTMP 1935, HTTP-FLV/HLS 8080, admin 1985)
#
# Built by scripts/images.sh, which compiles /edge on the host (static,
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
COPY edge /edge

USER 65532:65532
WORKDIR /data
EXPOSE 1935 8080 1985
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 CMD ["/edge", "healthcheck"]
ENTRYPOINT ["/edge"]
CMD ["serve"]

# Last, so a new version or commit only re-labels a cached image.
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
ARG SOURCE=https://github.com/livecluster/livecluster
ARG LICENSES=NOASSERTION
LABEL org.opencontainers.image.title="livecluster/edge" \
      org.opencontainers.image.description="the livecluster edge (RTMP 1935, HTTP-FLV/HLS 8080, admin 1985)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="${LICENSES}" \
      org.opencontainers.image.created="${CREATED}"
