//! Fuzzes the REST shim's JSON request bodies: the pbjson (proto3 JSON) decoders of
//! `ExecutionReport` (`POST /api/v1/reports`), `SubmitReportBatchRequest`
//! (`POST /api/v1/reports:batch`) and `UpsertWorkerRequest` (`PUT /api/v1/workers/{name}`),
//! then the validation each handler runs on what decoded.
//!
//! Must hold: nothing panics; whatever decodes encodes back to JSON that decodes to the same
//! message; an accepted report meets `runwarden_fuzz::check_report`; `worker_settings::validate`
//! accepts or names the broken rules.

#![no_main]

use libfuzzer_sys::fuzz_target;
use runwarden::{
    domain::worker_settings,
    proto::v1::{ExecutionReport, SubmitReportBatchRequest, UpsertWorkerRequest},
};
use runwarden_fuzz::{check_json_round_trip, check_report};

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = serde_json::from_slice::<ExecutionReport>(data) {
        check_json_round_trip(&report);
        check_report(Some(report));
    }
    if let Ok(batch) = serde_json::from_slice::<SubmitReportBatchRequest>(data) {
        check_json_round_trip(&batch);
        for report in batch.reports {
            check_report(Some(report));
        }
    }
    if let Ok(request) = serde_json::from_slice::<UpsertWorkerRequest>(data) {
        check_json_round_trip(&request);
        if let Err(violations) = worker_settings::validate(&request) {
            assert!(!violations.is_empty(), "a rejected request names at least one broken rule");
        }
    }
});
