# syntax=docker/dockerfile:1
# The taskmesh image: the production build (no embedded broker) of the one `taskmesh` binary,
# on a small non-root base. Not exercised by CI (no Docker engine there); `.ci/run` keeps the
# production feature set compiling. Build: docker build -t taskmesh:dev .

# The web app: generated clients (buf generate), type check, esbuild bundle into web/dist.
FROM node:20-bookworm AS web
WORKDIR /src
COPY proto proto
COPY web web
RUN cd web && npm install --no-audit --no-fund && npm run build

FROM rust:1.95-bookworm AS build
WORKDIR /src
# librdkafka is built from source by rdkafka-sys (its own configure and make; the image has
# gcc, make, zlib, pkg-config and libssl-dev) and linked against the system's OpenSSL 3.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p taskmesh --no-default-features \
    && install -D target/release/taskmesh /out/taskmesh

# distroless/cc: glibc, libgcc and OpenSSL 3 (libssl3), no shell, runs as uid 65532 (matches the chart).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/taskmesh /usr/local/bin/taskmesh
# `serve gateway` serves the web app from here.
COPY --from=web /src/web/dist /usr/share/taskmesh/web
ENV TASKMESH_WEB_DIR=/usr/share/taskmesh/web
USER 65532:65532
EXPOSE 8080 50051 50052 50053 50054
ENTRYPOINT ["/usr/local/bin/taskmesh"]
CMD ["serve", "gateway"]
