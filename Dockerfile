# Lifeboat: build the release binary, then run it in a slim image as a non-root user.
# No Docker engine runs in this project's CI: tests/gateway/container.rs starts the binary
# with this file's CMD, ENV and HEALTHCHECK instead.

FROM rust:1.95-slim-bookworm AS build
# make: jemalloc (the global allocator) is built from source by tikv-jemalloc-sys. Not pinned:
# the build stage takes whatever make bookworm has (a pin breaks when Debian updates it).
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin lifeboat

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin lifeboat \
    && mkdir -p /data /etc/lifeboat \
    && chown lifeboat /data
COPY --from=build /src/target/release/lifeboat /usr/local/bin/lifeboat
COPY config/lifeboat.toml /etc/lifeboat/lifeboat.toml
# The shipped config with the container's own settings from the environment (they override
# the file's keys): listen on every interface, keep the store in the /data volume. Set at
# least LIFEBOAT_API_KEY and LIFEBOAT_ADMIN_TOKEN, plus LIFEBOAT_PUBLIC_URL and the channels'
# variables; or mount your own config and point LIFEBOAT_CONFIG at it.
ENV LIFEBOAT_CONFIG=/etc/lifeboat/lifeboat.toml \
    LIFEBOAT_LISTEN=0.0.0.0:8080 \
    LIFEBOAT_STORE_PATH=/data/lifeboat.sled
# Numeric (the `lifeboat` user above), so a runtime that checks for non-root can see it.
USER 10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
# tests/gateway/container.rs runs this CMD with this ENV and this HEALTHCHECK against the
# binary (no Docker engine there): keep them in the forms it parses (JSON arrays, KEY=VALUE).
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["lifeboat", "healthcheck", "--url", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["lifeboat"]
CMD ["serve"]
