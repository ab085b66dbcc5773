# The pageview binary in a small runtime image; every service of docker-compose.yml that is
# ours (generator, processor, bucket setup) runs this same binary with its own command.
FROM rust:1.95-bookworm AS build
# Nothing to install: librdkafka and the C libraries it links (OpenSSL, zlib, zstd) are built
# from crate sources with the image's C compiler, make and perl (see Cargo.toml). The `dist`
# profile is the one for shipped binaries: slower to build than `release`, faster to run.
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo reads every target Cargo.toml declares, the benchmarks too.
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked \
    && cp target/dist/pageview /pageview

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
