# Multi-stage build: compile with the pinned toolchain, run as a non-root user on a slim base.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin portcullis

FROM debian:bookworm-slim
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
ENTRYPOINT ["portcullis", "serve", "--config", "/etc/portcullis/portcullis.toml", \
            "--data-dir", "/var/lib/portcullis/data", "--listen", "0.0.0.0:9000"]
