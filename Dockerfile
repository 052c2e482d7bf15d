# Build: docker build -t ghcr.io/certpin/certpin:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source changes rebuild only certpin.
COPY Cargo.toml Cargo.lock ./
# The tests' path dependency: cargo reads its manifest to resolve the lock.
COPY testkit ./testkit
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && echo 'fn main() {}' > benches/validate.rs \
 && cargo build --release --locked && rm -rf src benches
COPY src ./src
COPY benches ./benches
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin certpin

# glibc and libgcc only; runs as the distroless nonroot user (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/certpin /certpin
# One malloc arena: certpin mostly waits on the network, and glibc's
# per-thread arenas keep each burst's pages.
ENV MALLOC_ARENA_MAX=1
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/certpin"]
CMD ["run"]
