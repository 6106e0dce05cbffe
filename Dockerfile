# Build with cargo-chef so dependency layers are cached apart from jwksd's own code.
FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --locked
WORKDIR /build

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /build/recipe.json recipe.json
RUN cargo chef cook --release --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin jwksd && mkdir -p /out/data

# Distroless, non-root: no shell, no package manager, only the binary and libc.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /build/target/release/jwksd /usr/local/bin/jwksd
COPY --from=builder --chown=nonroot:nonroot /out/data /var/lib/jwksd
WORKDIR /var/lib/jwksd
ENV JWKSD_SERVER__PUBLIC_LISTEN=0.0.0.0:8080 \
    JWKSD_SERVER__PRIVATE_LISTEN=0.0.0.0:8081 \
    JWKSD_SERVER__DATA_DIR=/var/lib/jwksd
EXPOSE 8080 8081
VOLUME ["/var/lib/jwksd"]
HEALTHCHECK --interval=30s --timeout=5s CMD ["/usr/local/bin/jwksd", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/jwksd"]
CMD ["serve"]
