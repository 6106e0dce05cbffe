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
# The data directory is made here, 0700, because the runtime image has no shell to make it.
RUN cargo build --release --locked --bin jwksd && install -d -m 0700 /out/data

# Distroless, non-root (uid 65532): no shell, no package manager, only the binary and libc.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /build/target/release/jwksd /usr/local/bin/jwksd
COPY --from=builder --chown=nonroot:nonroot /out/data /var/lib/jwksd
USER nonroot:nonroot
WORKDIR /var/lib/jwksd
# The configuration through JWKSD_ variables, so that `docker exec CONTAINER jwksd keys list`
# (run as the same user, with the same environment) finds the private listener through
# loopback and the admin token in the data directory, with no flag. Mount a file and set
# JWKSD_CONFIG for key sets, clients and callers. With an external master key
# (JWKSD_SERVER__MASTER_KEY_FILE=/run/secrets/...), start once with JWKSD_INIT=1.
ENV JWKSD_SERVER__PUBLIC_LISTEN=0.0.0.0:8080 \
    JWKSD_SERVER__PRIVATE_LISTEN=0.0.0.0:8081 \
    JWKSD_SERVER__DATA_DIR=/var/lib/jwksd
EXPOSE 8080 8081
VOLUME ["/var/lib/jwksd"]
HEALTHCHECK --interval=30s --timeout=5s CMD ["/usr/local/bin/jwksd", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/jwksd"]
CMD ["serve"]
