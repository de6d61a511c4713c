# Lifeboat: build the release binary, then run it in a slim image as a non-root user.
# Not exercised in this project's CI (no Docker engine runs there); kept conventional.

FROM rust:1.95-slim-bookworm AS build
# make: jemalloc (the global allocator) is built from source by tikv-jemalloc-sys.
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
USER lifeboat
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
# The config's [server] listen must be 0.0.0.0:8080 inside a container, and [store] path
# under /data (e.g. "/data/lifeboat.sled"); mount your own config over /etc/lifeboat.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["lifeboat", "healthcheck", "--url", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["lifeboat"]
CMD ["serve", "--config", "/etc/lifeboat/lifeboat.toml"]
