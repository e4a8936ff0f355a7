# syntax=docker/dockerfile:1
# The taskmesh image: the production build (no embedded broker) of the one `taskmesh` binary,
# on a small non-root base. Not exercised by CI (no Docker engine there); `.ci/run` keeps the
# production feature set compiling. Build: docker build -t taskmesh:dev .

FROM rust:1.95-bookworm AS build
WORKDIR /src
# librdkafka is built from source by rdkafka-sys (its own configure and make; the image has
# gcc, make and zlib).
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p taskmesh --no-default-features \
    && install -D target/release/taskmesh /out/taskmesh

# distroless/cc: glibc and libgcc, no shell, runs as uid 65532 (matches the chart).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/taskmesh /usr/local/bin/taskmesh
USER 65532:65532
EXPOSE 8080 50051 50052 50053 50054
ENTRYPOINT ["/usr/local/bin/taskmesh"]
CMD ["serve", "gateway"]
