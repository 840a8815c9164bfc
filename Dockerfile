# otp-relay container image: a release build on the official Rust image, run on
# distroless (glibc, libgcc, CA certificates, no shell, no package manager) as the
# unprivileged "nonroot" user (uid 65532).
#
#   docker build -t otp-relay .
#   docker run --rm -p 3412:3412 otp-relay
#
# Both stages are Debian 12 (bookworm): the binary links glibc dynamically, so it
# must be built against a glibc no newer than the runtime's.

# The toolchain: the project needs Rust 1.85 or newer (rust-version in Cargo.toml).
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src

# jemalloc, the binary's allocator, is built from its C sources with make (the slim
# image has the C compiler but not make).
RUN apt-get update \
 && apt-get install -y --no-install-recommends make=4.3-4.1 \
 && rm -rf /var/lib/apt/lists/*

# 1. Dependencies only. The manifests and the lock file go in with empty stand-ins
#    for every target the manifests name (tests/api/main.rs included: Cargo checks
#    an explicit target's path even when it does not build it), so this layer, the
#    slow one, is rebuilt only when Cargo.toml, providers/Cargo.toml or Cargo.lock
#    change.
COPY Cargo.toml Cargo.lock ./
COPY providers/Cargo.toml providers/
RUN mkdir -p src providers/src tests/api \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs providers/src/lib.rs tests/api/main.rs \
 && cargo build --release --locked \
 && rm -rf src providers/src

# 2. The sources. COPY keeps the files' own modification times, which can be older
#    than the stand-ins built above: touching each crate root makes Cargo rebuild
#    both workspace crates for sure.
COPY providers/src providers/src
COPY src src
RUN touch src/main.rs src/lib.rs providers/src/lib.rs \
 && cargo build --release --locked \
 && cp target/release/otp-relay /otp-relay

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /otp-relay /usr/local/bin/otp-relay
# distroless' nonroot user (65532:65532), by number so that Kubernetes'
# runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 3412
# Stops gracefully on SIGTERM: the listener closes, sends in flight are answered.
STOPSIGNAL SIGTERM
# The binary probes its own /health/live on the port of BIND_ADDR; no curl needed.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/otp-relay", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/otp-relay"]
CMD ["serve"]
