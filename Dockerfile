# The pageview binary in a small runtime image; every service of docker-compose.yml that is
# ours (generator, processor, bucket setup) runs this same binary with its own command.
FROM rust:1.95-bookworm AS build
# Nothing to install: librdkafka and the C libraries it links (OpenSSL, zlib, zstd) are built
# from crate sources with the image's C compiler, make and perl (see Cargo.toml).
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && cp target/release/pageview /pageview

FROM debian:bookworm-slim
# The binary links only libc (and libgcc, libm); CA certificates for AWS and for Kafka over
# TLS; curl for health checks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --create-home pageview
COPY --from=build /pageview /usr/local/bin/pageview
USER pageview
WORKDIR /data
ENTRYPOINT ["pageview"]
CMD ["run"]
