//! Compiles `proto/` with protox (a protobuf compiler in Rust, so no `protoc` on the machine)
//! and generates prost messages and tonic clients/servers. The descriptor set, with imports and
//! source info (comments), is written to `OUT_DIR` for gRPC server reflection, and so is one
//! of `google/rpc/error_details.proto` (the detail types errors carry).
//!
//! The event catalogue (`catalogue.rs` in `OUT_DIR`, included by `src/catalogue.rs`) is
//! generated here from the `(taskmesh.events.v1.event)` option of each message of
//! `taskmesh.events.v1`: see `build/catalogue.rs`.

use std::path::{Path, PathBuf};

use prost::Message;

#[path = "build/catalogue.rs"]
mod catalogue;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let mut files = Vec::new();
    collect_protos(&root.join("taskmesh"), &mut files)?;
    files.sort();
    println!("cargo:rerun-if-changed={}", root.display());

    let mut compiler = protox::Compiler::new([&root])?;
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_files(&files)?;
    let fds = compiler.file_descriptor_set();

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("taskmesh_descriptor.bin"), fds.encode_to_vec())?;
    std::fs::write(
        out_dir.join("catalogue.rs"),
        catalogue::generate(&compiler.descriptor_pool())?,
    )?;

    // The error detail types the services send, for reflection only (the Rust crates use
    // tonic-types' copies): clients such as grpcurl can then decode the details.
    let details = protox::Compiler::new([&root])?
        .include_imports(true)
        .include_source_info(true)
        .open_files([root.join("google/rpc/error_details.proto")])?
        .file_descriptor_set();
    std::fs::write(
        out_dir.join("error_details_descriptor.bin"),
        details.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .codec_path("crate::codec::StrictCodec")
        .compile_fds(fds)?;
    Ok(())
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
