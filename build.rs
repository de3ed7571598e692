//! Compiles `proto/` with protox (pure Rust, no protoc), generates the tonic services, the
//! pbjson serde impls for the REST shim, and writes the descriptor set that reflection serves.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/runwarden/v1/analysis.proto",
    "proto/runwarden/v1/report.proto",
    "proto/runwarden/v1/report_service.proto",
    "proto/runwarden/v1/query_service.proto",
    "proto/runwarden/v1/guardian_service.proto",
    "proto/runwarden/v1/worker_service.proto",
    "proto/runwarden/v1/admin_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let fds = protox::compile(PROTOS, ["proto"])?;
    let descriptor_path = out_dir.join("runwarden_descriptor.bin");
    fs::write(&descriptor_path, fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;

    pbjson_build::Builder::new()
        .register_descriptors(&fs::read(&descriptor_path)?)?
        .preserve_proto_field_names()
        .emit_fields()
        .build(&[".runwarden"])?;
    Ok(())
}
