# Build: docker build -t ghcr.io/certpin/certpin:0.1.0 .
# Multi-arch (what .github/workflows/release.yml does):
#   docker buildx build --platform linux/amd64,linux/arm64 -t ... .
# The build stage runs on the builder's own platform and cross-compiles for
# the target with a Rust target and Debian's cross gcc (ring needs a C
# compiler), so an arm64 image needs no emulation.
# Base images are pinned by digest (the tag is kept for humans); refresh
# with `docker buildx imagetools inspect IMAGE:TAG`.
FROM --platform=$BUILDPLATFORM rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS build
ARG TARGETARCH
WORKDIR /src
# The target's Rust triple and, when it is not the builder's, its linker.
RUN set -eu; case "$TARGETARCH" in \
      amd64) triple=x86_64-unknown-linux-gnu gnu=x86_64-linux-gnu pkg=amd64 ;; \
      arm64) triple=aarch64-unknown-linux-gnu gnu=aarch64-linux-gnu pkg=arm64 ;; \
      *) echo "unsupported TARGETARCH $TARGETARCH" >&2; exit 1 ;; \
    esac; \
    echo "$triple" > /triple; \
    if [ "$(dpkg --print-architecture)" != "$pkg" ]; then \
      apt-get update && apt-get install -y --no-install-recommends "gcc-$gnu" "libc6-dev-$pkg-cross" \
      && rm -rf /var/lib/apt/lists/*; \
      env="$(echo "$triple" | tr 'a-z-' 'A-Z_')"; \
      printf 'export CARGO_TARGET_%s_LINKER=%s-gcc CC_%s=%s-gcc\n' "$env" "$gnu" "$(echo "$triple" | tr - _)" "$gnu" > /cross.env; \
    else : > /cross.env; fi; \
    rustup target add "$triple"
# Dependencies first, so source changes rebuild only certpin.
COPY Cargo.toml Cargo.lock ./
# The tests' path dependency: cargo reads its manifest to resolve the lock.
COPY testkit ./testkit
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && echo 'fn main() {}' > benches/validate.rs \
 && . /cross.env && cargo build --release --locked --target "$(cat /triple)" && rm -rf src benches
COPY src ./src
COPY benches ./benches
# The binary lands where a native build puts it, so the final stage copies
# one path whatever the target.
RUN touch src/main.rs src/lib.rs && . /cross.env \
 && cargo build --release --locked --bin certpin --target "$(cat /triple)" \
 && mkdir -p target/release && cp "target/$(cat /triple)/release/certpin" target/release/certpin

# glibc and libgcc only; runs as the distroless nonroot user (65532).
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="certpin"
LABEL org.opencontainers.image.description="Kubernetes operator that provisions PKCS12 client certificates, pinned per service, for apps' outgoing connections"
LABEL org.opencontainers.image.url="https://certpin.dev"
LABEL org.opencontainers.image.source="https://github.com/certpin/certpin"
LABEL org.opencontainers.image.documentation="https://github.com/certpin/certpin#readme"
LABEL org.opencontainers.image.licenses="Apache-2.0"
LABEL org.opencontainers.image.vendor="certpin"
LABEL org.opencontainers.image.version="$VERSION"
LABEL org.opencontainers.image.revision="$REVISION"
LABEL org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /src/target/release/certpin /certpin
# One malloc arena: certpin mostly waits on the network, and glibc's
# per-thread arenas keep each burst's pages.
ENV MALLOC_ARENA_MAX=1
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/certpin"]
CMD ["run"]
