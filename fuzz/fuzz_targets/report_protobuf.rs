//! Fuzzes the protobuf decoding of `SubmitReportRequest` (what a gRPC `SubmitReport` carries)
//! as the server decodes it (`runwarden::received`, which keeps the report's bytes) followed by
//! `validate_received`, the path every report from the network takes.
//!
//! Must hold: the server's decoding gives what prost's generated message gives (the same report,
//! or an error), and never panics, nor does validation; the bytes to be stored decode as the
//! normalized report; a rejected report names at least one broken
//! rule; an accepted report meets the contracts in `runwarden_fuzz::check_report` (consistent
//! timing, nothing in the future, re-validation changes nothing, the stored report survives the
//! REST shim's JSON encoding).

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use runwarden::{
    proto::v1::{self, ExecutionReport},
    received::SubmitReportRequest,
};

/// The same report: equal, or (a NaN is unequal to itself) equal as proto3 JSON, whose objects
/// do not depend on a map's order and which writes a NaN as null.
fn same(a: &Option<ExecutionReport>, b: &Option<ExecutionReport>) -> bool {
    a == b || serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

fuzz_target!(|data: &[u8]| {
    let reference = v1::SubmitReportRequest::decode(data);
    let received = SubmitReportRequest::decode(data);
    match (&reference, &received) {
        (Ok(reference), Ok(received)) => assert!(
            same(&reference.report, &received.report),
            "the server decodes what prost's generated message decodes: {reference:?} vs {received:?}"
        ),
        (Err(reference), Err(received)) => assert_eq!(reference.to_string(), received.to_string()),
        _ => panic!("one decoder failed, the other not: prost {reference:?}, the server {received:?}"),
    }
    if let Ok(request) = received {
        runwarden_fuzz::check_received(request.report, request.received);
    }
});
