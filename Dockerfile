# The pageview binary in a small runtime image; every service of docker-compose.yml that is
# ours (generator, processor, bucket setup) runs this same binary with its own command.
FROM rust:1.95-bookworm AS build
# librdkafka is built from source (rdkafka's cmake-build) against these.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        cmake libcurl4-openssl-dev libssl-dev zlib1g-dev libzstd-dev libsasl2-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && cp target/release/pageview /pageview

FROM debian:bookworm-slim
# zlib is the binary's one shared library beyond libc; CA certificates for AWS over TLS;
# curl for health checks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates zlib1g curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --create-home pageview
COPY --from=build /pageview /usr/local/bin/pageview
USER pageview
WORKDIR /data
ENTRYPOINT ["pageview"]
CMD ["run"]
