//! Every rule a report must satisfy before it is stored, in one place. A rejected report gets
//! one [`FieldViolation`] per broken rule, naming the field by its path inside the report
//! (`data_verification.records_failed`), so a worker author can fix everything in one go.
//!
//! Validation also normalizes: it generates a missing `execution_id`, derives whichever of
//! `started_at`, `completed_at` and `duration_ms` is missing, and canonicalizes the UUID.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use pbjson_types::{Struct, Timestamp, Value, value::Kind};
use prost::Message;
use uuid::Uuid;

use crate::proto::v1::{DataVerification, DependencyMetrics, ExecutionReport, Outcome, ResourceMetrics};

/// Limits on what one report may carry.
pub const MAX_WORKER_NAME: usize = 128;
pub const MAX_WORKER_TYPE: usize = 64;
pub const MAX_ERROR_MESSAGE_BYTES: usize = 8 * 1024;
pub const MAX_VALIDATION_ERRORS: usize = 200;
pub const MAX_VALIDATION_ERROR_BYTES: usize = 1024;
pub const MAX_MISSING_FIELDS: usize = 500;
pub const MAX_NULL_FIELD_COUNTS: usize = 500;
pub const MAX_FIELD_NAME_BYTES: usize = 256;
pub const MAX_CUSTOM_METRICS_BYTES: usize = 16 * 1024;
pub const MAX_CUSTOM_METRICS_DEPTH: usize = 16;
pub const MAX_CPU_PERCENT: f64 = 10_000.0;
/// Longest run accepted: 30 days.
pub const MAX_DURATION_MS: i64 = 30 * 24 * 3600 * 1000;
/// How far in the future a timestamp may be (clock skew allowance).
pub const MAX_FUTURE_SKEW: TimeDelta = TimeDelta::minutes(5);
/// How far `duration_ms` may disagree with the timestamps.
pub const DURATION_TOLERANCE_MS: i64 = 1000;
/// Timestamps are accepted from 1970-01-01 to 9999-12-31.
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

/// One broken rule: the field's path inside the report and what the rule is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        FieldViolation { field: field.into(), description: description.into() }
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// A report that passed every rule, normalized, with its key facts typed.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidReport {
    /// The report as it will be stored: `execution_id`, both timestamps and `duration_ms` set.
    pub report: ExecutionReport,
    /// `report`'s protobuf encoding, as stored: the bytes it was received in when they were kept
    /// (see [`validate_received`]), else encoded anew. Either decodes as `report`. Empty once
    /// the planner has moved it into a row ([`ValidReport::encoded_copy`] encodes anew then).
    pub encoded: Vec<u8>,
    pub execution_id: Uuid,
    pub outcome: Outcome,
    pub started_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    pub duration_ms: i64,
}

impl ValidReport {
    /// A copy of the bytes to store ([`ValidReport::encoded`]), or the report encoded anew if
    /// they were taken.
    pub fn encoded_copy(&self) -> Vec<u8> {
        if self.encoded.is_empty() { self.report.encode_to_vec() } else { self.encoded.clone() }
    }
}

/// Collects violations while walking a report.
#[derive(Default)]
struct Violations(Vec<FieldViolation>);

impl Violations {
    fn add(&mut self, field: &str, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    fn non_negative(&mut self, field: &str, value: i64) {
        if value < 0 {
            self.add(field, format!("must be >= 0, got {value}"));
        }
    }

    fn finite_non_negative(&mut self, field: &str, value: Option<f64>) {
        match value {
            Some(v) if !v.is_finite() => self.add(field, "must be a finite number"),
            Some(v) if v < 0.0 => self.add(field, format!("must be >= 0, got {v}")),
            _ => {}
        }
    }

    fn bounded_text(&mut self, field: &str, value: &str, max_bytes: usize) {
        if value.len() > max_bytes {
            self.add(field, format!("must be at most {max_bytes} bytes, got {}", value.len()));
        }
    }
}

/// Checks `report` against every rule and normalizes it. `now` is the server's receive time:
/// it bounds future timestamps and stands in for `completed_at` when the worker sent none.
pub fn validate_report(
    report: Option<ExecutionReport>,
    now: DateTime<Utc>,
) -> Result<ValidReport, Vec<FieldViolation>> {
    validate_received(report, None, now)
}

/// [`validate_report`] of a report that arrived as `received`: an encoding that decodes as
/// `report` (`crate::received` keeps it). Those bytes, with the fields normalization changed
/// appended, become [`ValidReport::encoded`] instead of an encoding made anew; they may carry
/// fields this server does not know, which decoding ignores.
pub fn validate_received(
    report: Option<ExecutionReport>,
    received: Option<Vec<u8>>,
    now: DateTime<Utc>,
) -> Result<ValidReport, Vec<FieldViolation>> {
    let Some(mut report) = report else {
        return Err(vec![FieldViolation::new("report", "is required")]);
    };
    let mut v = Violations::default();

    check_worker_name(&mut v, &report.worker_name);
    if report.worker_type.chars().count() > MAX_WORKER_TYPE {
        v.add("worker_type", format!("must be at most {MAX_WORKER_TYPE} characters"));
    } else if report.worker_type.chars().any(char::is_control) {
        v.add("worker_type", "must not contain control characters");
    }

    let execution_id = if report.execution_id.is_empty() {
        Some(Uuid::now_v7())
    } else {
        match Uuid::try_parse(&report.execution_id) {
            Ok(id) => Some(id),
            Err(_) => {
                v.add("execution_id", "must be a UUID (e.g. 0192f0c4-5b7e-7c3a-9a51-1f2d3c4b5a69) or empty");
                None
            }
        }
    };

    let outcome = match Outcome::try_from(report.outcome) {
        Ok(Outcome::Unspecified) => {
            v.add("outcome", "is required: one of SUCCESS, PARTIAL, FAILED, TIMEOUT, SKIPPED");
            None
        }
        Ok(outcome) => Some(outcome),
        Err(_) => {
            v.add("outcome", format!("unknown value {}", report.outcome));
            None
        }
    };

    v.bounded_text("error_message", &report.error_message, MAX_ERROR_MESSAGE_BYTES);

    let timing = check_timing(&mut v, &report, now);

    if let Some(data) = &report.data_verification {
        check_data_verification(&mut v, data);
    }
    if let Some(resources) = &report.resource_metrics {
        check_resources(&mut v, resources);
    }
    if let Some(deps) = &report.dependency_metrics {
        check_dependencies(&mut v, deps);
    }
    if let Some(custom) = &report.custom_metrics {
        check_custom_metrics(&mut v, custom);
    }

    match (v.0.is_empty(), execution_id, outcome, timing) {
        (true, Some(execution_id), Some(outcome), Some((started_at, completed_at, duration_ms))) => {
            let normalized = Normalized {
                execution_id: execution_id.hyphenated().to_string(),
                started_at: to_timestamp(started_at),
                completed_at: to_timestamp(completed_at),
                duration_ms,
            };
            let encoded = received.map(|mut bytes| {
                normalized.append_changes(&report, &mut bytes);
                bytes
            });
            report.execution_id = normalized.execution_id;
            report.started_at = Some(normalized.started_at);
            report.completed_at = Some(normalized.completed_at);
            report.duration_ms = Some(duration_ms);
            let encoded = encoded.unwrap_or_else(|| report.encode_to_vec());
            Ok(ValidReport { report, encoded, execution_id, outcome, started_at, completed_at, duration_ms })
        }
        _ => Err(v.0),
    }
}

/// The fields normalization sets.
struct Normalized {
    execution_id: String,
    started_at: Timestamp,
    completed_at: Timestamp,
    duration_ms: i64,
}

impl Normalized {
    /// Appends to `bytes`, an encoding of `report`, each of these fields that differs from
    /// `report`'s, so that the bytes decode as the normalized report: a later occurrence of a
    /// scalar field replaces an earlier one, and a timestamp written with both of its fields
    /// (zeros too, which prost would leave out) replaces both fields of an earlier one.
    fn append_changes(&self, report: &ExecutionReport, bytes: &mut Vec<u8>) {
        use prost::encoding::{int64, string};
        if report.execution_id != self.execution_id {
            string::encode(2, &self.execution_id, bytes);
        }
        for (tag, given, normalized) in
            [(4, &report.started_at, &self.started_at), (5, &report.completed_at, &self.completed_at)]
        {
            if given.as_ref() != Some(normalized) {
                encode_timestamp_in_full(tag, normalized, bytes);
            }
        }
        if report.duration_ms != Some(self.duration_ms) {
            int64::encode(6, &self.duration_ms, bytes);
        }
    }
}

/// A `google.protobuf.Timestamp` field with both of its fields written, as int64 and int32 are
/// (two's complement, sign-extended to 64 bits).
fn encode_timestamp_in_full(tag: u32, ts: &Timestamp, bytes: &mut Vec<u8>) {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
    let seconds = ts.seconds as u64;
    let nanos = i64::from(ts.nanos) as u64;
    encode_key(tag, WireType::LengthDelimited, bytes);
    encode_varint((2 + encoded_len_varint(seconds) + encoded_len_varint(nanos)) as u64, bytes);
    encode_key(1, WireType::Varint, bytes);
    encode_varint(seconds, bytes);
    encode_key(2, WireType::Varint, bytes);
    encode_varint(nanos, bytes);
}

/// Checks a worker name on its own (also used by queries that take one).
pub fn check_worker_name_field(field: &str, name: &str) -> Result<(), FieldViolation> {
    let mut v = Violations::default();
    check_worker_name(&mut v, name);
    match v.0.pop() {
        Some(mut violation) => {
            violation.field = field.to_owned();
            Err(violation)
        }
        None => Ok(()),
    }
}

fn check_worker_name(v: &mut Violations, name: &str) {
    if name.is_empty() {
        v.add("worker_name", "is required");
    } else if name.len() > MAX_WORKER_NAME {
        v.add("worker_name", format!("must be at most {MAX_WORKER_NAME} characters, got {}", name.len()));
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')) {
        v.add("worker_name", "may contain only A-Z, a-z, 0-9, '_', '.', ':' and '-'");
    }
}

/// Converts a protobuf timestamp, or says why it cannot be one.
pub fn from_timestamp(ts: &Timestamp) -> Result<DateTime<Utc>, String> {
    if !(0..=MAX_TIMESTAMP_SECONDS).contains(&ts.seconds) {
        return Err("must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z".into());
    }
    let nanos = u32::try_from(ts.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| "nanos must be in 0..999999999".to_string())?;
    DateTime::from_timestamp(ts.seconds, nanos).ok_or_else(|| "is not a valid time".into())
}

pub fn to_timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

/// Validates the three timing fields together and derives the missing ones.
fn check_timing(
    v: &mut Violations,
    report: &ExecutionReport,
    now: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>, i64)> {
    let before = v.0.len();
    let mut parse = |field: &str, ts: &Option<Timestamp>| -> Option<DateTime<Utc>> {
        let ts = ts.as_ref()?;
        match from_timestamp(ts) {
            Ok(t) if t > now + MAX_FUTURE_SKEW => {
                v.add(field, "must not be more than 5 minutes in the future");
                None
            }
            Ok(t) => Some(t),
            Err(why) => {
                v.add(field, why);
                None
            }
        }
    };
    let started = parse("started_at", &report.started_at);
    let completed = parse("completed_at", &report.completed_at);
    if let Some(d) = report.duration_ms {
        if d < 0 {
            v.add("duration_ms", format!("must be >= 0, got {d}"));
        } else if d > MAX_DURATION_MS {
            v.add("duration_ms", format!("must be at most {MAX_DURATION_MS} (30 days), got {d}"));
        }
    }
    if v.0.len() > before {
        return None;
    }
    let duration = report.duration_ms.map(TimeDelta::milliseconds);
    let (started, completed, duration) = match (started, completed, duration) {
        (Some(s), Some(c), Some(d)) => {
            let span = (c - s).num_milliseconds();
            if (span - d.num_milliseconds()).abs() > DURATION_TOLERANCE_MS {
                v.add(
                    "duration_ms",
                    format!(
                        "must agree with completed_at - started_at ({span} ms) within {DURATION_TOLERANCE_MS} ms, got {}",
                        d.num_milliseconds()
                    ),
                );
            }
            (s, c, d)
        }
        (Some(s), Some(c), None) => (s, c, c - s),
        (None, Some(c), Some(d)) => (c - d, c, d),
        (Some(s), None, Some(d)) => (s, s + d, d),
        (Some(s), None, None) => (s, now.max(s), now.max(s) - s),
        (None, None, Some(d)) => (now - d, now, d),
        (None, Some(_), None) | (None, None, None) => {
            v.add("duration_ms", "is required when started_at is absent");
            return None;
        }
    };
    if started > completed {
        v.add("started_at", "must not be after completed_at");
    }
    // The same bounds hold for derived values as for sent ones: a run that was given only
    // started_at and duration_ms must not end in the future, and one given only its start (it
    // lasts until now) or its two ends must not last more than 30 days.
    if report.completed_at.is_none() && completed > now + MAX_FUTURE_SKEW {
        v.add("duration_ms", "started_at + duration_ms must not be more than 5 minutes in the future");
    }
    if report.duration_ms.is_none() && duration.num_milliseconds() > MAX_DURATION_MS {
        let (field, what) = match report.completed_at {
            Some(_) => ("completed_at", "completed_at - started_at"),
            None => ("started_at", "without duration_ms or completed_at the run lasts until now, so now - started_at"),
        };
        v.add(field, format!("{what} must be at most 30 days, got {} ms", duration.num_milliseconds()));
    }
    if started.timestamp() < 0 {
        v.add("started_at", "must not be before 1970-01-01T00:00:00Z");
    }
    if v.0.len() > before {
        return None;
    }
    Some((started, completed, duration.num_milliseconds()))
}

fn check_data_verification(v: &mut Violations, d: &DataVerification) {
    let counts = [
        ("data_verification.records_fetched", d.records_fetched),
        ("data_verification.records_processed", d.records_processed),
        ("data_verification.records_stored", d.records_stored),
        ("data_verification.records_failed", d.records_failed),
        ("data_verification.records_skipped", d.records_skipped),
        ("data_verification.validation_checks_passed", d.validation_checks_passed),
        ("data_verification.validation_checks_failed", d.validation_checks_failed),
        ("data_verification.api_calls_made", d.api_calls_made),
        ("data_verification.api_calls_succeeded", d.api_calls_succeeded),
        ("data_verification.api_calls_failed", d.api_calls_failed),
        ("data_verification.api_quota_remaining", d.api_quota_remaining.unwrap_or(0)),
        ("data_verification.cache_hits", d.cache_hits),
        ("data_verification.cache_misses", d.cache_misses),
        ("data_verification.cache_writes", d.cache_writes),
        ("data_verification.cache_ttl_seconds", d.cache_ttl_seconds.unwrap_or(0)),
    ];
    for (field, value) in counts {
        v.non_negative(field, value);
    }
    v.finite_non_negative("data_verification.newest_record_age_seconds", d.newest_record_age_seconds);
    v.finite_non_negative("data_verification.oldest_record_age_seconds", d.oldest_record_age_seconds);
    v.finite_non_negative("data_verification.avg_record_age_seconds", d.avg_record_age_seconds);

    if d.missing_fields.len() > MAX_MISSING_FIELDS {
        v.add(
            "data_verification.missing_fields",
            format!("must have at most {MAX_MISSING_FIELDS} entries, got {}", d.missing_fields.len()),
        );
    } else if let Some(i) = d.missing_fields.iter().position(|f| f.is_empty() || f.len() > MAX_FIELD_NAME_BYTES) {
        v.add(&format!("data_verification.missing_fields[{i}]"), format!("must be 1 to {MAX_FIELD_NAME_BYTES} bytes"));
    }

    if d.null_field_counts.len() > MAX_NULL_FIELD_COUNTS {
        v.add(
            "data_verification.null_field_counts",
            format!("must have at most {MAX_NULL_FIELD_COUNTS} entries, got {}", d.null_field_counts.len()),
        );
    } else {
        let mut keys: Vec<_> = d.null_field_counts.iter().collect();
        keys.sort();
        for (key, count) in keys {
            if key.is_empty() || key.len() > MAX_FIELD_NAME_BYTES {
                v.add("data_verification.null_field_counts", format!("keys must be 1 to {MAX_FIELD_NAME_BYTES} bytes"));
                break;
            }
            if *count < 0 {
                v.add(&format!("data_verification.null_field_counts[{key}]"), format!("must be >= 0, got {count}"));
            }
        }
    }

    if d.validation_errors.len() > MAX_VALIDATION_ERRORS {
        v.add(
            "data_verification.validation_errors",
            format!("must have at most {MAX_VALIDATION_ERRORS} entries, got {}", d.validation_errors.len()),
        );
    } else if let Some(i) = d.validation_errors.iter().position(|e| e.len() > MAX_VALIDATION_ERROR_BYTES) {
        v.add(
            &format!("data_verification.validation_errors[{i}]"),
            format!("must be at most {MAX_VALIDATION_ERROR_BYTES} bytes"),
        );
    }
}

fn check_resources(v: &mut Violations, r: &ResourceMetrics) {
    v.finite_non_negative("resource_metrics.memory_peak_mb", r.memory_peak_mb);
    match r.cpu_percent_avg {
        Some(c) if !c.is_finite() => v.add("resource_metrics.cpu_percent_avg", "must be a finite number"),
        Some(c) if !(0.0..=MAX_CPU_PERCENT).contains(&c) => {
            v.add("resource_metrics.cpu_percent_avg", format!("must be between 0 and {MAX_CPU_PERCENT}, got {c}"));
        }
        _ => {}
    }
    v.non_negative("resource_metrics.network_bytes_received", r.network_bytes_received);
    v.non_negative("resource_metrics.database_query_count", r.database_query_count);
    v.non_negative("resource_metrics.redis_operations", r.redis_operations);
}

fn check_dependencies(v: &mut Violations, d: &DependencyMetrics) {
    v.finite_non_negative("dependency_metrics.upstream_data_age_seconds", d.upstream_data_age_seconds);
    v.non_negative("dependency_metrics.downstream_consumers_waiting", d.downstream_consumers_waiting);
}

fn check_custom_metrics(v: &mut Violations, custom: &Struct) {
    let size = custom.encoded_len();
    if size > MAX_CUSTOM_METRICS_BYTES {
        v.add("custom_metrics", format!("must be at most {MAX_CUSTOM_METRICS_BYTES} bytes encoded, got {size}"));
        return;
    }
    if let Err(why) = check_struct(custom, 1) {
        v.add("custom_metrics", why);
    }
}

/// JSON cannot carry NaN or infinity, and deep nesting only ever comes from a bug or an attack.
fn check_struct(s: &Struct, depth: usize) -> Result<(), String> {
    if depth > MAX_CUSTOM_METRICS_DEPTH {
        return Err(format!("must be nested at most {MAX_CUSTOM_METRICS_DEPTH} levels deep"));
    }
    s.fields.values().try_for_each(|value| check_value(value, depth))
}

fn check_value(value: &Value, depth: usize) -> Result<(), String> {
    match &value.kind {
        Some(Kind::NumberValue(n)) if !n.is_finite() => Err("numbers must be finite".into()),
        Some(Kind::StructValue(s)) => check_struct(s, depth + 1),
        Some(Kind::ListValue(list)) => {
            if depth + 1 > MAX_CUSTOM_METRICS_DEPTH {
                return Err(format!("must be nested at most {MAX_CUSTOM_METRICS_DEPTH} levels deep"));
            }
            list.values.iter().try_for_each(|item| check_value(item, depth + 1))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default()
    }

    fn minimal() -> ExecutionReport {
        ExecutionReport {
            worker_name: "analytics_flush_worker".into(),
            outcome: Outcome::Success as i32,
            duration_ms: Some(5000),
            ..Default::default()
        }
    }

    fn fields(result: Result<ValidReport, Vec<FieldViolation>>) -> Vec<String> {
        match result {
            Ok(_) => vec![],
            Err(v) => v.into_iter().map(|f| f.field).collect(),
        }
    }

    #[test]
    fn minimal_report_is_normalized() {
        let valid = validate_report(Some(minimal()), now()).expect("valid");
        assert_eq!(valid.completed_at, now());
        assert_eq!(valid.started_at, now() - TimeDelta::milliseconds(5000));
        assert_eq!(valid.duration_ms, 5000);
        assert_eq!(valid.report.execution_id, valid.execution_id.to_string());
        assert!(valid.report.started_at.is_some() && valid.report.completed_at.is_some());
    }

    /// Found by the fuzzer (fuzz/regressions/report_protobuf): derived timing escaped the
    /// bounds sent timing is held to.
    #[test]
    fn derived_timing_is_bounded_like_sent_timing() {
        let ts = |t: DateTime<Utc>| Some(to_timestamp(t));
        let month = TimeDelta::milliseconds(MAX_DURATION_MS);
        // started now, lasting 30 days: it would complete in the future.
        let future = ExecutionReport { started_at: ts(now()), duration_ms: Some(MAX_DURATION_MS), ..minimal() };
        assert_eq!(fields(validate_report(Some(future), now())), ["duration_ms"]);
        // Only a start, in 1970: it would have lasted 56 years.
        let ancient = ExecutionReport { started_at: ts(now() - month * 700), duration_ms: None, ..minimal() };
        assert_eq!(fields(validate_report(Some(ancient), now())), ["started_at"]);
        // Both ends, 31 days apart.
        let long = ExecutionReport {
            started_at: ts(now() - month - TimeDelta::days(1)),
            completed_at: ts(now()),
            duration_ms: None,
            ..minimal()
        };
        assert_eq!(fields(validate_report(Some(long), now())), ["completed_at"]);
        // At the bounds it is accepted.
        let edge = ExecutionReport { started_at: ts(now() - month), duration_ms: None, ..minimal() };
        assert!(validate_report(Some(edge), now()).is_ok());
    }

    #[test]
    fn missing_report_names_report() {
        assert_eq!(fields(validate_report(None, now())), ["report"]);
    }

    #[test]
    fn each_rule_names_its_field() {
        type Mutation = Box<dyn Fn(&mut ExecutionReport)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("worker_name", Box::new(|r| r.worker_name.clear())),
            ("worker_name", Box::new(|r| r.worker_name = "a b".into())),
            ("worker_name", Box::new(|r| r.worker_name = "x".repeat(129))),
            ("execution_id", Box::new(|r| r.execution_id = "not-a-uuid".into())),
            ("outcome", Box::new(|r| r.outcome = 0)),
            ("outcome", Box::new(|r| r.outcome = 42)),
            ("duration_ms", Box::new(|r| r.duration_ms = Some(-1))),
            ("duration_ms", Box::new(|r| r.duration_ms = None)),
            ("error_message", Box::new(|r| r.error_message = "e".repeat(8 * 1024 + 1))),
            ("started_at", Box::new(|r| r.started_at = Some(to_timestamp(now() + TimeDelta::minutes(6))))),
            ("completed_at", Box::new(|r| r.completed_at = Some(Timestamp { seconds: -5, nanos: 0 }))),
            ("completed_at", Box::new(|r| r.completed_at = Some(Timestamp { seconds: 5, nanos: -1 }))),
            (
                "data_verification.records_failed",
                Box::new(|r| r.data_verification = Some(DataVerification { records_failed: -3, ..Default::default() })),
            ),
            (
                "data_verification.newest_record_age_seconds",
                Box::new(|r| {
                    r.data_verification =
                        Some(DataVerification { newest_record_age_seconds: Some(f64::NAN), ..Default::default() })
                }),
            ),
            (
                "data_verification.validation_errors",
                Box::new(|r| {
                    r.data_verification =
                        Some(DataVerification { validation_errors: vec!["e".into(); 201], ..Default::default() })
                }),
            ),
            (
                "data_verification.validation_errors[1]",
                Box::new(|r| {
                    r.data_verification = Some(DataVerification {
                        validation_errors: vec!["ok".into(), "e".repeat(1025)],
                        ..Default::default()
                    })
                }),
            ),
            (
                "data_verification.missing_fields",
                Box::new(|r| {
                    r.data_verification =
                        Some(DataVerification { missing_fields: vec!["f".into(); 501], ..Default::default() })
                }),
            ),
            (
                "resource_metrics.cpu_percent_avg",
                Box::new(|r| {
                    r.resource_metrics = Some(ResourceMetrics { cpu_percent_avg: Some(10_001.0), ..Default::default() })
                }),
            ),
            (
                "resource_metrics.memory_peak_mb",
                Box::new(|r| {
                    r.resource_metrics =
                        Some(ResourceMetrics { memory_peak_mb: Some(f64::INFINITY), ..Default::default() })
                }),
            ),
            (
                "dependency_metrics.downstream_consumers_waiting",
                Box::new(|r| {
                    r.dependency_metrics =
                        Some(DependencyMetrics { downstream_consumers_waiting: -1, ..Default::default() })
                }),
            ),
            (
                "custom_metrics",
                Box::new(|r| {
                    let mut s = Struct::default();
                    s.fields.insert("x".into(), Value { kind: Some(Kind::NumberValue(f64::NAN)) });
                    r.custom_metrics = Some(s);
                }),
            ),
            (
                "custom_metrics",
                Box::new(|r| {
                    let mut s = Struct::default();
                    s.fields.insert("big".into(), Value { kind: Some(Kind::StringValue("x".repeat(17 * 1024))) });
                    r.custom_metrics = Some(s);
                }),
            ),
        ];
        for (expected, mutate) in cases {
            let mut report = minimal();
            mutate(&mut report);
            assert_eq!(fields(validate_report(Some(report), now())), [expected], "case {expected}");
        }
    }

    #[test]
    fn all_violations_are_reported_at_once() {
        let mut report = minimal();
        report.worker_name.clear();
        report.outcome = 0;
        report.resource_metrics = Some(ResourceMetrics { database_query_count: -1, ..Default::default() });
        assert_eq!(
            fields(validate_report(Some(report), now())),
            ["worker_name", "outcome", "resource_metrics.database_query_count"]
        );
    }

    #[test]
    fn duration_must_agree_with_timestamps() {
        let mut report = minimal();
        report.started_at = Some(to_timestamp(now() - TimeDelta::seconds(10)));
        report.completed_at = Some(to_timestamp(now()));
        report.duration_ms = Some(10_900);
        assert!(validate_report(Some(report.clone()), now()).is_ok());
        report.duration_ms = Some(11_100);
        assert_eq!(fields(validate_report(Some(report.clone()), now())), ["duration_ms"]);
        report.duration_ms = None;
        assert_eq!(validate_report(Some(report), now()).map(|v| v.duration_ms), Ok(10_000));
    }

    #[test]
    fn started_after_completed_is_rejected() {
        let mut report = minimal();
        report.started_at = Some(to_timestamp(now()));
        report.completed_at = Some(to_timestamp(now() - TimeDelta::seconds(1)));
        report.duration_ms = None;
        assert_eq!(fields(validate_report(Some(report), now())), ["started_at"]);
    }

    #[test]
    fn uuid_is_canonicalized() {
        let mut report = minimal();
        report.execution_id = "0192F0C45B7E7C3A9A511F2D3C4B5A69".into();
        let valid = validate_report(Some(report), now()).expect("valid");
        assert_eq!(valid.report.execution_id, "0192f0c4-5b7e-7c3a-9a51-1f2d3c4b5a69");
    }

    #[test]
    fn deep_custom_metrics_are_rejected() {
        let mut value = Value { kind: Some(Kind::NumberValue(1.0)) };
        for _ in 0..20 {
            let mut s = Struct::default();
            s.fields.insert("n".into(), value);
            value = Value { kind: Some(Kind::StructValue(s)) };
        }
        let mut report = minimal();
        let mut top = Struct::default();
        top.fields.insert("deep".into(), value);
        report.custom_metrics = Some(top);
        assert_eq!(fields(validate_report(Some(report), now())), ["custom_metrics"]);
    }

    proptest! {
        /// Whatever bytes arrive, decoding then validating never panics, and an accepted report
        /// satisfies the invariants the store relies on.
        #[test]
        fn decode_and_validate_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(report) = ExecutionReport::decode(bytes.as_slice())
                && let Ok(valid) = validate_report(Some(report), now())
            {
                prop_assert!(valid.started_at <= valid.completed_at);
                prop_assert!(valid.duration_ms >= 0);
                prop_assert!(valid.completed_at <= now() + MAX_FUTURE_SKEW);
            }
        }

        /// A report validated with the bytes it was received in is stored as bytes that decode
        /// as the normalized report, whichever timing fields and id form it came with and
        /// whatever unknown fields ride along; and it validates as the decoded report alone does.
        #[test]
        fn received_bytes_plus_appended_fields_decode_as_the_normalized_report(
            id in prop_oneof![
                Just(String::new()),
                Just("0192f0c4-5b7e-7c3a-9a51-1f2d3c4b5a69".to_string()),
                Just("0192F0C4-5B7E-7C3A-9A51-1F2D3C4B5A69".to_string()),
                Just("{0192f0c4-5b7e-7c3a-9a51-1f2d3c4b5a69}".to_string()),
                Just("0192f0c45b7e7c3a9a511f2d3c4b5a69".to_string()),
                Just("not-a-uuid".to_string()),
            ],
            started in proptest::option::of((-20_000i64..0, 0..1_000_000_000i32)),
            completed in proptest::option::of((-10_000i64..100, 0..1_000_000_000i32)),
            duration in proptest::option::of(0i64..20_000_000),
            unknown in proptest::collection::vec(any::<u8>(), 0..8),
            partial_timestamp in any::<bool>(),
        ) {
            let at = |(offset, nanos): (i64, i32)| Timestamp { seconds: now().timestamp() + offset, nanos };
            let report = ExecutionReport {
                execution_id: id,
                started_at: started.map(at),
                completed_at: completed.map(at),
                duration_ms: duration,
                ..minimal()
            };
            let mut bytes = report.encode_to_vec();
            // A field this server does not know (number 999, bytes).
            prost::encoding::bytes::encode(999, &unknown, &mut bytes);
            if partial_timestamp && report.started_at.is_none() {
                // An empty started_at occurrence: the epoch, given (so kept as it came).
                prost::encoding::encode_key(4, prost::encoding::WireType::LengthDelimited, &mut bytes);
                prost::encoding::encode_varint(0, &mut bytes);
            }
            let generated = report.execution_id.is_empty();
            let decoded = ExecutionReport::decode(bytes.as_slice()).expect("decodes");
            let alone = validate_report(Some(decoded.clone()), now());
            let received = validate_received(Some(decoded), Some(bytes), now());
            match (alone, received) {
                (Ok(mut alone), Ok(received)) => {
                    prop_assert_eq!(ExecutionReport::decode(received.encoded.as_slice()).ok(), Some(received.report.clone()));
                    prop_assert_eq!(ExecutionReport::decode(alone.encoded.as_slice()).ok(), Some(alone.report.clone()));
                    if generated {
                        // Each validation generates its own id.
                        alone.execution_id = received.execution_id;
                        alone.report.execution_id.clone_from(&received.report.execution_id);
                    }
                    prop_assert_eq!(ValidReport { encoded: Vec::new(), ..alone }, ValidReport { encoded: Vec::new(), ..received });
                }
                (Err(alone), Err(received)) => prop_assert_eq!(fields(Err(alone)), fields(Err(received))),
                (alone, received) => prop_assert!(false, "alone {:?}, received {:?}", alone.is_ok(), received.is_ok()),
            }
        }

        #[test]
        fn counts_are_accepted_iff_non_negative(n in any::<i64>()) {
            let mut report = minimal();
            report.data_verification = Some(DataVerification { records_processed: n, ..Default::default() });
            prop_assert_eq!(validate_report(Some(report), now()).is_ok(), n >= 0);
        }

        #[test]
        fn any_duration_in_range_derives_consistent_times(d in 0..=MAX_DURATION_MS) {
            let mut report = minimal();
            report.duration_ms = Some(d);
            let valid = validate_report(Some(report), now()).expect("valid");
            prop_assert_eq!((valid.completed_at - valid.started_at).num_milliseconds(), d);
        }
    }
}
