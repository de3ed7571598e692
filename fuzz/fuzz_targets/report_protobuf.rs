//! Fuzzes the protobuf decoding of `SubmitReportRequest` (what a gRPC `SubmitReport` carries)
//! followed by `validate_report`, the path every report from the network takes.
//!
//! Must hold: decoding and validation never panic; a rejected report names at least one broken
//! rule; an accepted report meets the contracts in `runwarden_fuzz::check_report` (consistent
//! timing, nothing in the future, re-validation changes nothing, the stored report survives the
//! REST shim's JSON encoding).

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use runwarden::proto::v1::SubmitReportRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = SubmitReportRequest::decode(data) {
        runwarden_fuzz::check_report(request.report);
    }
});
