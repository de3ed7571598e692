//! The generated contract: `runwarden.v1` messages and services (prost + tonic), their proto3
//! JSON mapping (pbjson), and the encoded descriptor set that server reflection serves.
//!
//! Nothing here is written by hand except the re-exports; the build script owns the rest.

#![allow(clippy::all, clippy::pedantic, missing_docs, unused_qualifications)]

/// `runwarden.v1`, generated from `proto/runwarden/v1/*.proto`.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/runwarden.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/runwarden.v1.serde.rs"));
}

/// Every file of the contract and its imports, for `grpc.reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/runwarden_descriptor.bin"));
