# Multi-stage build: compile with the pinned toolchain, run as a non-root user on a slim base.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin portcullis

FROM debian:bookworm-slim
# ca-certificates: the S3, Azure and GCS backends speak HTTPS to their services; curl: the
# health check below.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --home-dir /var/lib/portcullis --create-home portcullis \
 && mkdir -p /etc/portcullis /var/lib/portcullis/data \
 && chown -R portcullis:portcullis /var/lib/portcullis
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
# The shipped config holds the published development credentials, which the gateway refuses on
# a non-loopback listener: mount your own over it (docker run -v ./portcullis.toml:/etc/...).
COPY config/portcullis.toml /etc/portcullis/portcullis.toml
USER portcullis
WORKDIR /var/lib/portcullis
VOLUME ["/var/lib/portcullis"]
EXPOSE 9000
# Liveness from the admin listener's tokenless /health (200 ok or degraded, 503 when the
# metadata store is unreachable). Your config must enable [admin] (a token set) on this
# address, or set PORTCULLIS_HEALTH_URL to where it listens.
ENV PORTCULLIS_HEALTH_URL=http://127.0.0.1:9001/health
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD curl -fsS "$PORTCULLIS_HEALTH_URL" >/dev/null || exit 1
ENTRYPOINT ["portcullis", "serve", "--config", "/etc/portcullis/portcullis.toml", \
            "--data-dir", "/var/lib/portcullis/data", "--listen", "0.0.0.0:9000"]
