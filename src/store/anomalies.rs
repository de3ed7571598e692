//! Queries on `anomalies`, and the per-worker window of recent runs that detection compares each
//! new run with (kept as JSON in the worker's row, so detection needs no extra read).
//!
//! The window is written as an array of arrays, each run's fields in [`StoredRun`]'s order
//! (`[t,ok,failed,skipped,ms,overall,quality,mem,cpu,records,limited,quota]`): ~75 bytes a run
//! instead of ~170 as objects, so a worker's 30 runs fit in its row's B-tree page instead of
//! spilling into an overflow page that every batch touching the worker rewrites. Rows written
//! before (objects with these field names) still read.

use std::collections::HashMap;

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
};
use serde::Deserialize;

use super::entities::anomalies;
use crate::domain::anomaly::{Finding, RunSample};

pub use anomalies::Model as AnomalyRow;

/// The stored form of a [`RunSample`]. Reads from an array of its fields in this order (how
/// it is written) or from an object of them (how it was written before).
#[derive(Deserialize)]
struct StoredRun {
    t: i64,
    ok: bool,
    failed: bool,
    skipped: bool,
    ms: f64,
    overall: f64,
    quality: f64,
    mem: Option<f64>,
    cpu: Option<f64>,
    records: f64,
    limited: bool,
    quota: Option<f64>,
}

/// The recent runs kept in a worker's row, oldest first; an unreadable value starts afresh.
pub fn decode_recent(json: Option<&str>) -> Vec<RunSample> {
    let stored: Vec<StoredRun> = json.and_then(|j| serde_json::from_str(j).ok()).unwrap_or_default();
    stored
        .into_iter()
        .map(|r| RunSample {
            started_at: super::from_micros(r.t),
            outcome_success: r.ok,
            outcome_failed: r.failed,
            skipped: r.skipped,
            duration_ms: r.ms,
            overall_score: r.overall,
            data_quality_score: r.quality,
            memory_peak_mb: r.mem,
            cpu_percent_avg: r.cpu,
            records_processed: r.records,
            api_rate_limited: r.limited,
            api_quota_remaining: r.quota,
        })
        .collect()
}

/// The recent runs as stored: one array of [`StoredRun`]'s fields per run (see the module docs).
pub fn encode_recent(runs: &[RunSample]) -> String {
    let stored: Vec<_> = runs
        .iter()
        .map(|r| {
            (
                super::to_micros(r.started_at),
                r.outcome_success,
                r.outcome_failed,
                r.skipped,
                r.duration_ms,
                r.overall_score,
                r.data_quality_score,
                r.memory_peak_mb,
                r.cpu_percent_avg,
                r.records_processed,
                r.api_rate_limited,
                r.api_quota_remaining,
            )
        })
        .collect();
    serde_json::to_string(&stored).unwrap_or_else(|_| "[]".into())
}

/// `runs` as [`decode_recent`] reads them back once [`encode_recent`] has written them, without
/// the round trip: start times to the microsecond, every number as it was. `None` when a number is
/// not finite: it is written as `null`, which reads back as `None` or makes the whole window
/// unreadable (empty).
///
/// The ingest planner keeps this next to the worker rows it caches, so a batch starts from the
/// window the row holds without decoding it again.
pub fn as_stored(runs: &[RunSample]) -> Option<Vec<RunSample>> {
    let finite = |x: f64| x.is_finite();
    runs.iter()
        .map(|r| {
            let numbers = [r.duration_ms, r.overall_score, r.data_quality_score, r.records_processed];
            let optional = [r.memory_peak_mb, r.cpu_percent_avg, r.api_quota_remaining];
            (numbers.into_iter().all(finite) && optional.into_iter().flatten().all(finite))
                .then(|| RunSample { started_at: super::from_micros(super::to_micros(r.started_at)), ..r.clone() })
        })
        .collect()
}

/// An anomaly found in this batch, not yet written.
pub struct NewAnomaly {
    pub worker_id: i64,
    pub finding: Finding,
    pub opened_at_us: i64,
    pub resolved_at_us: Option<i64>,
    /// The run that showed it; `None` for findings of the detector (missed runs, failure rate).
    pub execution_id: Option<String>,
}

fn evidence_json(f: &Finding) -> String {
    evidence_value(f).to_string()
}

/// A finding's evidence as stored (and as alerts carry it).
pub fn evidence_value(f: &Finding) -> serde_json::Value {
    serde_json::json!({
        "value": f.evidence.value,
        "baseline_median": f.evidence.baseline_median,
        "mad": f.evidence.mad,
        "threshold": f.evidence.threshold,
        "window": f.evidence.window,
        "detail": f.evidence.detail,
    })
}

pub async fn insert(db: &impl ConnectionTrait, new: &[NewAnomaly]) -> Result<(), DbErr> {
    for chunk in new.chunks(100) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|a| anomalies::ActiveModel {
                worker_id: Set(a.worker_id),
                kind: Set(a.finding.kind.as_str().to_owned()),
                severity: Set(a.finding.severity.as_str().to_owned()),
                evidence: Set(evidence_json(&a.finding)),
                opened_at_us: Set(a.opened_at_us),
                resolved_at_us: Set(a.resolved_at_us),
                execution_id: Set(a.execution_id.clone()),
                ..Default::default()
            })
            .collect();
        anomalies::Entity::insert_many(rows).exec_without_returning(db).await?;
    }
    Ok(())
}

/// The (worker, kind) pairs among `worker_ids` that have open anomalies.
pub async fn open_kinds(db: &impl ConnectionTrait, worker_ids: &[i64]) -> Result<Vec<(i64, String)>, DbErr> {
    let mut found = Vec::new();
    for chunk in worker_ids.chunks(500) {
        let rows: Vec<(i64, String)> = anomalies::Entity::find()
            .select_only()
            .column(anomalies::Column::WorkerId)
            .column(anomalies::Column::Kind)
            .distinct()
            .filter(anomalies::Column::ResolvedAtUs.is_null())
            .filter(anomalies::Column::WorkerId.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(db)
            .await?;
        found.extend(rows);
    }
    Ok(found)
}

/// Resolves the worker's open anomalies of `kind` opened before `at_us`.
pub async fn resolve(db: &impl ConnectionTrait, worker_id: i64, kind: &str, at_us: i64) -> Result<u64, DbErr> {
    Ok(resolve_statement(worker_id, kind, at_us).exec(db).await?.rows_affected)
}

/// The UPDATE of [`resolve`]; it runs in every ingest batch, and must stay a seek on
/// `idx_anomalies_worker_kind_open` (a test checks SQLite's plan).
pub fn resolve_statement(worker_id: i64, kind: &str, at_us: i64) -> sea_orm::UpdateMany<anomalies::Entity> {
    anomalies::Entity::update_many()
        .col_expr(anomalies::Column::ResolvedAtUs, Expr::value(at_us))
        .filter(anomalies::Column::WorkerId.eq(worker_id))
        .filter(anomalies::Column::Kind.eq(kind))
        .filter(anomalies::Column::ResolvedAtUs.is_null())
        .filter(anomalies::Column::OpenedAtUs.lte(at_us))
}

/// What to list.
#[derive(Debug, Default, Clone)]
pub struct AnomalyFilter {
    pub worker_id: Option<i64>,
    pub kind: Option<String>,
    pub since_us: Option<i64>,
    pub open_only: bool,
}

/// Newest first (by id), strictly before `before_id`.
pub async fn list(
    db: &impl ConnectionTrait,
    filter: &AnomalyFilter,
    before_id: Option<i64>,
    limit: u64,
) -> Result<Vec<AnomalyRow>, DbErr> {
    use anomalies::Column as C;
    let mut query = anomalies::Entity::find().order_by_desc(C::Id).limit(limit);
    if let Some(w) = filter.worker_id {
        query = query.filter(C::WorkerId.eq(w));
    }
    if let Some(k) = &filter.kind {
        query = query.filter(C::Kind.eq(k.as_str()));
    }
    if let Some(since) = filter.since_us {
        query = query.filter(C::OpenedAtUs.gte(since));
    }
    if filter.open_only {
        query = query.filter(C::ResolvedAtUs.is_null());
    }
    if let Some(before) = before_id {
        query = query.filter(C::Id.lt(before));
    }
    query.all(db).await
}

/// Open anomalies per worker among `worker_ids`.
pub async fn open_counts(db: &impl ConnectionTrait, worker_ids: &[i64]) -> Result<HashMap<i64, i64>, DbErr> {
    let mut counts = HashMap::new();
    for chunk in worker_ids.chunks(500) {
        let rows: Vec<(i64, i64)> = anomalies::Entity::find()
            .select_only()
            .column(anomalies::Column::WorkerId)
            .column_as(anomalies::Column::Id.count(), "open")
            .filter(anomalies::Column::ResolvedAtUs.is_null())
            .filter(anomalies::Column::WorkerId.is_in(chunk.iter().copied()))
            .group_by(anomalies::Column::WorkerId)
            .into_tuple()
            .all(db)
            .await?;
        counts.extend(rows);
    }
    Ok(counts)
}

/// Open anomalies per kind, across every worker.
pub async fn open_by_kind(db: &impl ConnectionTrait) -> Result<Vec<(String, i64)>, DbErr> {
    anomalies::Entity::find()
        .select_only()
        .column(anomalies::Column::Kind)
        .column_as(anomalies::Column::Id.count(), "open")
        .filter(anomalies::Column::ResolvedAtUs.is_null())
        .group_by(anomalies::Column::Kind)
        .into_tuple()
        .all(db)
        .await
}

/// Open anomalies, (worker, kind, severity), across every worker.
pub async fn open_all(db: &impl ConnectionTrait) -> Result<Vec<(i64, String, String)>, DbErr> {
    anomalies::Entity::find()
        .select_only()
        .column(anomalies::Column::WorkerId)
        .column(anomalies::Column::Kind)
        .column(anomalies::Column::Severity)
        .filter(anomalies::Column::ResolvedAtUs.is_null())
        .into_tuple()
        .all(db)
        .await
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use proptest::prelude::*;

    use super::*;

    fn sample(t_us: i64, quota: Option<f64>) -> RunSample {
        RunSample {
            started_at: crate::store::from_micros(t_us),
            outcome_success: true,
            outcome_failed: false,
            skipped: false,
            duration_ms: 1234.5,
            overall_score: 97.25,
            data_quality_score: 100.0,
            memory_peak_mb: Some(512.0),
            cpu_percent_avg: None,
            records_processed: 1000.0,
            api_rate_limited: true,
            api_quota_remaining: quota,
        }
    }

    #[test]
    fn the_window_is_written_as_arrays_and_reads_back() {
        let runs = vec![sample(1_795_988_623_650_199, None), sample(1_795_988_633_655_152, Some(42.0))];
        let text = encode_recent(&runs);
        assert_eq!(
            text,
            "[[1795988623650199,true,false,false,1234.5,97.25,100.0,512.0,null,1000.0,true,null],\
             [1795988633655152,true,false,false,1234.5,97.25,100.0,512.0,null,1000.0,true,42.0]]"
        );
        assert_eq!(decode_recent(Some(&text)), runs);
    }

    #[test]
    fn windows_written_as_objects_still_read() {
        let old = r#"[{"t":1795988623650199,"ok":true,"failed":false,"skipped":false,"ms":1234.5,"overall":97.25,"quality":100.0,"mem":512.0,"cpu":null,"records":1000.0,"limited":true,"quota":7.0}]"#;
        assert_eq!(decode_recent(Some(old)), vec![sample(1_795_988_623_650_199, Some(7.0))]);
        assert_eq!(decode_recent(Some("not json")), vec![], "an unreadable window starts afresh");
        assert_eq!(decode_recent(None), vec![]);
    }

    proptest! {
        /// Whatever a worker's row holds, reading it never panics; what was written reads back.
        #[test]
        fn any_text_decodes_without_panicking(text in ".{0,200}") {
            let _ = decode_recent(Some(&text));
        }

        #[test]
        fn written_windows_read_back(
            runs in proptest::collection::vec(
                (0i64..4_000_000_000_000_000, any::<[bool; 4]>(), -1e12f64..1e12, proptest::option::of(0f64..1e9)),
                0..40,
            )
        ) {
            let runs: Vec<RunSample> = runs
                .into_iter()
                .map(|(t, flags, x, quota)| RunSample {
                    started_at: crate::store::from_micros(t),
                    outcome_success: flags[0],
                    outcome_failed: flags[1],
                    skipped: flags[2],
                    duration_ms: x,
                    overall_score: x / 3.0,
                    data_quality_score: 0.1,
                    memory_peak_mb: quota,
                    cpu_percent_avg: quota.map(|q| q / 7.0),
                    records_processed: x * 2.0,
                    api_rate_limited: flags[3],
                    api_quota_remaining: quota,
                })
                .collect();
            prop_assert_eq!(decode_recent(Some(&encode_recent(&runs))), runs);
        }

        /// What the planner caches is exactly what the row it writes reads back as, for any
        /// start time (nanoseconds included) and any number (infinite and NaN included).
        #[test]
        fn the_stored_view_is_what_reads_back(
            runs in proptest::collection::vec(
                (
                    -4_000_000_000_000_000_000i64..4_000_000_000_000_000_000,
                    any::<[bool; 4]>(),
                    prop_oneof![48 => -1e12f64..1e12, 1 => Just(f64::NAN), 1 => Just(f64::INFINITY)],
                    proptest::option::of(prop_oneof![48 => 0f64..1e9, 1 => Just(f64::NEG_INFINITY)]),
                ),
                0..40,
            )
        ) {
            let runs: Vec<RunSample> = runs
                .into_iter()
                .map(|(t_ns, flags, x, quota)| RunSample {
                    started_at: DateTime::from_timestamp_nanos(t_ns),
                    outcome_success: flags[0],
                    outcome_failed: flags[1],
                    skipped: flags[2],
                    duration_ms: x,
                    overall_score: 42.5,
                    data_quality_score: x / 3.0,
                    memory_peak_mb: quota,
                    cpu_percent_avg: Some(12.25),
                    records_processed: 7.0,
                    api_rate_limited: flags[3],
                    api_quota_remaining: quota.map(|q| q * 2.0),
                })
                .collect();
            // `None` claims nothing: the planner then decodes the row it wrote.
            if let Some(stored) = as_stored(&runs) {
                prop_assert_eq!(stored, decode_recent(Some(&encode_recent(&runs))));
            }
        }
    }
}
