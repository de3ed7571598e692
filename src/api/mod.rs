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

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

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

/// The duration of a `grpc-timeout` header: 1–8 ASCII digits and a unit (`H`, `M`, `S`, `m`, `u`,
/// `n`), as the gRPC over HTTP/2 protocol defines it. `None` for anything else.
pub(crate) fn grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::grpc_timeout;

    #[test]
    fn grpc_timeouts_in_every_unit() {
        assert_eq!(grpc_timeout(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(grpc_timeout(b"3M"), Some(Duration::from_secs(180)));
        assert_eq!(grpc_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(grpc_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout(b"99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(grpc_timeout(b"1n"), Some(Duration::from_nanos(1)));
        for bad in [&b""[..], b"m", b"100", b"123456789m", b"-5m", b"5 m", b"5x", b"\xff\xfem", "5\u{663}m".as_bytes()]
        {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }

    proptest! {
        /// Any header bytes: an answer or `None`, never a panic.
        #[test]
        fn any_grpc_timeout_header_is_parsed_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = grpc_timeout(&bytes);
        }

        /// What a client writes is read back exactly.
        #[test]
        fn written_grpc_timeouts_read_back(amount in 0u64..100_000_000, unit in 0usize..6) {
            let (suffix, duration) = [
                ("H", Duration::from_secs(amount * 3600)),
                ("M", Duration::from_secs(amount * 60)),
                ("S", Duration::from_secs(amount)),
                ("m", Duration::from_millis(amount)),
                ("u", Duration::from_micros(amount)),
                ("n", Duration::from_nanos(amount)),
            ][unit];
            prop_assert_eq!(grpc_timeout(format!("{amount}{suffix}").as_bytes()), Some(duration));
        }
    }
}
