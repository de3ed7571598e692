//! Compiles `proto/` with protox (pure Rust, no protoc), generates the tonic services, the
//! pbjson serde impls for the REST shim, and writes the descriptor set that reflection serves;
//! then the report service's server once more, on the requests of `src/received.rs`.
//! Also lists the dashboard's committed bundle (`dashboard/dist/`) for `src/dashboard.rs` to embed.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

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
        // prost's codec, decoding each message from one slice (src/codec.rs).
        .codec_path("crate::codec::SliceCodec")
        .compile_fds(fds)?;

    // The report service once more, for the server alone: its two request messages are the
    // hand-written ones of `src/received.rs` (prost's, plus each report's bytes as received),
    // every other type the ones generated above.
    let received_dir = out_dir.join("received");
    fs::create_dir_all(&received_dir)?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .extern_path(".runwarden.v1", "crate::proto::v1")
        .extern_path(".runwarden.v1.SubmitReportRequest", "crate::received::SubmitReportRequest")
        .extern_path(".runwarden.v1.SubmitReportBatchRequest", "crate::received::SubmitReportBatchRequest")
        .codec_path("crate::codec::SliceCodec")
        .out_dir(&received_dir)
        .compile_fds(protox::compile(["proto/runwarden/v1/report_service.proto"], ["proto"])?)?;

    pbjson_build::Builder::new()
        .register_descriptors(&fs::read(&descriptor_path)?)?
        .preserve_proto_field_names()
        .emit_fields()
        .build(&[".runwarden"])?;

    embed_dashboard(&out_dir)?;
    Ok(())
}

/// Writes `dashboard_files.rs`: a `&[(path, bytes)]` of every file under `dashboard/dist/`
/// (paths relative to it, '/'-separated, sorted), each embedded with `include_bytes!`.
fn embed_dashboard(out_dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=dashboard/dist");
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("dashboard").join("dist");
    let mut files = Vec::new();
    let mut pending = vec![root.clone()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut table = String::from("&[\n");
    for path in files {
        let relative = path.strip_prefix(&root)?.to_string_lossy().replace('\\', "/");
        // Relative to the crate being compiled, not to this build's checkout: a target
        // directory shared by several checkouts may reuse this script's output for another one.
        let include = format!("/dashboard/dist/{relative}");
        table.push_str(&format!(
            "    ({relative:?}, include_bytes!(concat!(env!(\"CARGO_MANIFEST_DIR\"), {include:?})) as &[u8]),\n"
        ));
    }
    table.push(']');
    fs::write(out_dir.join("dashboard_files.rs"), table)?;
    Ok(())
}
