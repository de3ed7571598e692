# syntax=docker/dockerfile:1
# The runwarden image: one static-ish binary on distroless, running as the nonroot user.
#   docker build -t runwarden:0.1.0 .
#   docker run --rm -p 50051:50051 -v runwarden-data:/data runwarden:0.1.0
# The build needs only crates.io (no protoc: the protos are compiled by a pure-Rust compiler).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src

# Dependencies first, in their own layer: built against empty sources, so that a change to the
# code does not rebuild every crate. build.rs and proto/ come along so the build-dependencies
# (the proto compiler) are cached too.
COPY Cargo.toml Cargo.lock build.rs ./
COPY .cargo .cargo
COPY migrations/Cargo.toml migrations/Cargo.toml
COPY proto proto
RUN mkdir -p src migrations/src dashboard/dist \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs migrations/src/lib.rs \
 && cargo build --release --locked --bin runwarden \
 && rm -rf src migrations/src

# The real sources. touch: their mtimes may be older than the placeholder build's outputs.
# dashboard/dist is the committed web bundle build.rs embeds (no Node.js in the image build).
COPY src src
COPY dashboard/dist dashboard/dist
COPY migrations/src migrations/src
RUN touch src/main.rs src/lib.rs migrations/src/lib.rs \
 && cargo build --release --locked --bin runwarden \
 && install -D -m 0755 target/release/runwarden /out/runwarden \
 && install -d -m 0750 /out/state/data

FROM gcr.io/distroless/cc-debian12:nonroot
# The binary stays root-owned (not writable by the user that runs it); /data is the user's.
COPY --from=build /out/runwarden /usr/local/bin/runwarden
COPY --from=build --chown=65532:65532 /out/state/ /
# 65532 is distroless' "nonroot"; the Helm chart's securityContext runs as the same ids.
USER 65532:65532
# The default database, sqlite://runwarden.db?mode=rwc, is relative to the working directory:
# /data, where a volume belongs.
WORKDIR /data
ENV RUNWARDEN_LISTEN=0.0.0.0:50051
# Listening beyond loopback needs auth: every call needs a token from the start. Create the first
# with `docker exec CONTAINER runwarden token create --name ops --scope admin` (SECURITY.md), or
# set RUNWARDEN_REQUIRE_AUTH=false RUNWARDEN_INSECURE=true on a network you trust.
ENV RUNWARDEN_REQUIRE_AUTH=true
EXPOSE 50051
HEALTHCHECK --interval=15s --timeout=10s --start-period=30s --retries=3 CMD ["runwarden", "health", "--addr", "127.0.0.1:50051"]
ENTRYPOINT ["runwarden"]
CMD ["serve"]
