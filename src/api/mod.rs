//! The service implementations: decode, call the domain and the store, encode. Each RPC is an
//! inherent method returning `Result<_, Error>` that the tonic trait impls and the REST shim
//! both call, so every face runs the same code and answers the same errors.

pub mod admin;
pub mod anomalies;
pub mod guardian;
pub mod learning;
pub mod prometheus;
pub mod query;
pub mod report;
pub mod stats;
pub mod workers;

use std::{future::Future, sync::Arc, time::Instant};

use chrono::{DateTime, Utc};

use crate::{
    error::{Error, code_name},
    store::{Store, ingest::Ingest},
};

pub use guardian::GuardianApi;
pub use query::QueryApi;
pub use report::ReportApi;

/// The source of "now": the system clock in the server, a fixed or stepped one in tests.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// What every service needs.
pub struct Services {
    pub store: Store,
    pub ingest: Ingest,
    pub clock: Arc<dyn Clock>,
    pub guardian: Arc<crate::guardian::Guardian>,
}

/// Runs one RPC body, recording its count, code and latency.
pub(crate) async fn observe<T>(method: &'static str, body: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    let started = Instant::now();
    let result = body.await;
    let code = match &result {
        Ok(_) => "OK",
        Err(e) => code_name(e.code()),
    };
    metrics::counter!("runwarden_requests_total", "method" => method, "code" => code).increment(1);
    metrics::histogram!("runwarden_request_duration_seconds", "method" => method)
        .record(started.elapsed().as_secs_f64());
    result
}
