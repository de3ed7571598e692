//! `runwarden demo`: fills an empty database with realistic histories so the dashboard has
//! something to show before any worker reports. Everything goes through the paths the server
//! uses: reports are validated and committed by the ingest writer ([`ingest::spawn`]), schedules
//! are declared as `UpsertWorker` declares them, the missed-run detector and one guardian tick run
//! once at the end. Nothing here writes executions, rollups or anomalies by hand.
//!
//! The histories are a pure function of `now` and a constant seed ([`histories`]): the same
//! `now` gives the same reports. The demo refuses a database that already has workers, so it
//! never mixes invented runs with real ones.
//!
//! What it contains: five workers (two hourly, one hourly intel aggregation, two daily) over
//! `days` days, with injected duration spikes and a memory spike, a failure streak, a worker
//! that went silent five hours ago (DOWN), one rate-limited until its API quota ran out, a silent
//! success; the guardian's own history (`sse_guardian`, one tick a minute for six hours) and
//! tracked streams of every built-in type, some healthy, some stale, some orphaned.

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, DurationRound, TimeDelta, Timelike, Utc};
use pbjson_types::{Struct, Value, value::Kind};

use crate::{
    api::Clock,
    detector::{Detector, DetectorConfig},
    domain::{
        guardian::{GuardianConfig, TrackedStream},
        validation::{to_timestamp, validate_report},
        worker_settings::WorkerSettings,
    },
    error::Error,
    guardian::{GUARDIAN_WORKER, Guardian},
    proto::v1::{DataVerification, DependencyMetrics, ExecutionReport, Outcome, ResourceMetrics},
    store::{
        Store,
        ingest::{self, Ack, IngestConfig},
        streams, workers,
    },
};

/// Seed of the demo's random numbers: the same every run.
const SEED: u64 = 0x7275_6e77_6172_6465;
/// Reports handed to the writer at once (well under its queue capacity).
const CHUNK: usize = 500;
/// How long ago the silent worker last ran.
const SILENT_FOR_HOURS: i64 = 5;
/// The guardian history the demo invents, one tick a minute.
const GUARDIAN_HISTORY_MINUTES: i64 = 6 * 60;

/// The demo's workers and their declared schedules (interval seconds or cron, grace seconds).
pub const WORKERS: [(&str, &str, Schedule); 5] = [
    ("analytics_flush_worker", "analytics", Schedule::Every(3600)),
    ("coach_cleanup_worker", "coach", Schedule::Every(3600)),
    ("clip_radar_recap_worker", "clip_radar", Schedule::Cron("0 3 * * *")),
    ("intel_aggregation_hourly", "intel", Schedule::Every(3600)),
    ("intel_aggregation_daily", "intel", Schedule::Cron("0 4 * * *")),
];

#[derive(Debug, Clone, Copy)]
pub enum Schedule {
    Every(i64),
    Cron(&'static str),
}

/// What the demo stored.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DemoSummary {
    pub workers: usize,
    pub executions: u64,
    pub streams: usize,
    pub missed_runs: usize,
}

/// A small deterministic generator (SplitMix64): enough for plausible jitter, no dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in [low, high].
    fn between(&mut self, low: i64, high: i64) -> i64 {
        let span = (high - low + 1).max(1) as u64;
        low + (self.next_u64() % span) as i64
    }

    /// Roughly normal around `mean` (sum of three uniforms), never below 10 % of it.
    fn around(&mut self, mean: f64, spread: f64) -> f64 {
        let z = (self.unit() + self.unit() + self.unit() - 1.5) * 2.0;
        (mean * (1.0 + spread * z)).max(mean * 0.1)
    }
}

/// Fills `store` (migrated, without workers) with the demo histories ending at `now`.
pub async fn run(store: &Store, days: u32, now: DateTime<Utc>) -> Result<DemoSummary, Error> {
    let existing = workers::list(store.reader(), None, 1).await?;
    if let Some(row) = existing.first() {
        return Err(Error::AlreadyExists(format!(
            "the database already has workers (e.g. {}); runwarden demo fills only an empty database: \
             pass --database with a new file",
            row.worker_name
        )));
    }
    let clock: Arc<dyn Clock> = Arc::new(FixedClock(now));
    let (ingest, writer) = ingest::spawn(store.clone(), IngestConfig::default());
    let result = fill(store, &ingest, clock, days, now).await;
    writer.shutdown().await;
    result
}

async fn fill(
    store: &Store,
    ingest: &ingest::Ingest,
    clock: Arc<dyn Clock>,
    days: u32,
    now: DateTime<Utc>,
) -> Result<DemoSummary, Error> {
    let mut summary = DemoSummary::default();
    let reports = histories(now, days);
    for chunk in reports.chunks(CHUNK) {
        let mut batch = Vec::with_capacity(chunk.len());
        for report in chunk {
            let valid = validate_report(Some(report.clone()), now).map_err(|violations| {
                Error::internal(format!("a demo report is invalid: {}", Error::InvalidArgument(violations)))
            })?;
            // Received when it completed, as if it had been reported live.
            let received_at = valid.completed_at;
            batch.push((valid, received_at));
        }
        for ack in ingest.submit_many(batch).await? {
            if matches!(ack?, Ack::Stored(_)) {
                summary.executions += 1;
            }
        }
    }
    tracing::info!(executions = summary.executions, "demo histories stored");

    let txn = store.begin_write().await?;
    for (name, worker_type, schedule) in WORKERS {
        let (interval_secs, cron) = match schedule {
            Schedule::Every(secs) => (Some(secs), None),
            Schedule::Cron(expr) => (None, Some(expr.to_owned())),
        };
        let settings = WorkerSettings {
            worker_name: name.to_owned(),
            worker_type: Some(worker_type.to_owned()),
            interval_secs,
            cron,
            grace_secs: Some(300),
            owner: "platform-team".to_owned(),
            description: format!("demo worker ({worker_type})"),
            labels: BTreeMap::from([("env".to_owned(), "demo".to_owned())]),
            paused: None,
        };
        workers::upsert_settings(&txn, store.backend(), &settings, now).await?;
    }
    txn.commit().await?;
    summary.workers = WORKERS.len();

    summary.streams = open_streams(store, now).await?;
    let detector = Detector::new(store.clone(), ingest.clone(), clock.clone(), DetectorConfig::default());
    summary.missed_runs = detector.run_once().await?.missed_runs;
    let guardian = Guardian::new(store.clone(), GuardianConfig::default(), ingest.clone(), clock).await?;
    guardian.run_once().await?;
    Ok(summary)
}

/// The clock the detector and the guardian see: the demo's `now`.
struct FixedClock(DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// Tracked streams of every built-in type: most healthy, some stale, some orphaned (enough to
/// cross the guardian's orphan warnings). Their heartbeats stop with the demo, so a server
/// started later sees them age, turn orphaned and get cleaned, as after a crash of their owners.
async fn open_streams(store: &Store, now: DateTime<Utc>) -> Result<usize, Error> {
    let types = ["generation", "coach_start", "coach_continue", "profile_start", "profile_continue"];
    let mut rng = Rng(SEED ^ 0x5354_5245_414d);
    let txn = store.begin_write().await?;
    let mut count = 0;
    for (t, stream_type) in types.iter().enumerate() {
        let streams_of_type = 6 + t as i64 * 2;
        for i in 0..streams_of_type {
            // Heartbeat ages: healthy under 30 s, stale under 2 min, orphaned beyond.
            let age_secs = match (t + i as usize) % 4 {
                0 => rng.between(130, 280),
                2 if t % 2 == 0 => rng.between(40, 100),
                _ => rng.between(1, 20),
            };
            let stream = TrackedStream {
                stream_id: format!("demo-{stream_type}-{i:02}"),
                stream_type: (*stream_type).to_owned(),
                owner: format!("api-{}", rng.between(1, 4)),
                opened_at: now - TimeDelta::seconds(age_secs + rng.between(60, 3600)),
                last_heartbeat: now - TimeDelta::seconds(age_secs),
                closed_at: None,
                close_reason: None,
                owner_gone: false,
                orphaned_at: None,
            };
            let labels = std::collections::HashMap::from([("demo".to_owned(), "true".to_owned())]);
            if streams::insert(&txn, &stream, &labels).await? {
                count += 1;
            }
        }
    }
    txn.commit().await?;
    Ok(count)
}

/// Every demo report, oldest first, for `days` days ending at `now`.
pub fn histories(now: DateTime<Utc>, days: u32) -> Vec<ExecutionReport> {
    let mut rng = Rng(SEED);
    let hour = now.duration_trunc(TimeDelta::hours(1)).unwrap_or(now);
    let day = now.duration_trunc(TimeDelta::days(1)).unwrap_or(now);
    let hours = i64::from(days) * 24;
    let mut reports = Vec::new();
    // The latest analytics run carries the anomalies the dashboard shows as open; this hour's run
    // (at :05, under two minutes even when it spikes) is finished 7 minutes into the hour. Before
    // that the latest is the previous hour's, and this hour's is left out even if it has already
    // finished (a short normal run at :06 would resolve the spike).
    let latest_hour = if hour + TimeDelta::minutes(7) <= now { 0 } else { 1 };
    // The daily intel run (04:00, about ten minutes) that is the latest to have finished: today's,
    // or before it has run, yesterday's (its silent success must be the latest run either way).
    let latest_day = if day + TimeDelta::minutes(4 * 60 + 12) <= now { 0 } else { 1 };

    for h in (0..hours).rev() {
        let slot = hour - TimeDelta::hours(h);
        let latest = h == latest_hour;
        let analytics = analytics_flush(&mut rng, slot, h, latest);
        if h >= latest_hour {
            reports.push(analytics);
        }
        if h >= SILENT_FOR_HOURS {
            reports.push(coach_cleanup(&mut rng, slot));
        }
        reports.push(intel_hourly(&mut rng, slot, h));
    }
    for d in (0..i64::from(days)).rev() {
        let midnight = day - TimeDelta::days(d);
        reports.push(clip_radar_recap(&mut rng, midnight, d));
        // Before 04:12 today's run is left out even if it has already finished.
        let daily = intel_daily(&mut rng, midnight, d - latest_day);
        if d >= latest_day {
            reports.push(daily);
        }
    }
    for m in (1..=GUARDIAN_HISTORY_MINUTES).rev() {
        reports.push(guardian_tick(&mut rng, now - TimeDelta::minutes(m), m));
    }
    // Only runs that finished by now.
    reports.retain(|r| finished_by(r, now));
    reports.sort_by_key(|r| r.started_at.as_ref().map(|t| (t.seconds, t.nanos)));
    reports
}

fn finished_by(report: &ExecutionReport, now: DateTime<Utc>) -> bool {
    let started = report.started_at.as_ref().map_or(i64::MAX, |t| t.seconds);
    started.saturating_add(report.duration_ms.unwrap_or(0) / 1000 + 1) <= now.timestamp()
}

fn number(n: f64) -> Value {
    Value { kind: Some(Kind::NumberValue(n)) }
}

fn custom(fields: &[(&str, f64)]) -> Option<Struct> {
    Some(Struct { fields: fields.iter().map(|(k, v)| ((*k).to_owned(), number(*v))).collect() })
}

/// A report with the fields every demo run shares.
fn base(rng: &mut Rng, worker: &str, worker_type: &str, started: DateTime<Utc>, duration_ms: i64) -> ExecutionReport {
    ExecutionReport {
        worker_name: worker.to_owned(),
        execution_id: uuid_from(rng),
        worker_type: worker_type.to_owned(),
        started_at: Some(to_timestamp(started)),
        duration_ms: Some(duration_ms),
        outcome: Outcome::Success as i32,
        ..Default::default()
    }
}

/// A version-4-shaped UUID from the demo's generator, so reruns produce the same ids.
fn uuid_from(rng: &mut Rng) -> String {
    let bits = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
    uuid::Builder::from_random_bytes(bits.to_be_bytes()).into_uuid().hyphenated().to_string()
}

/// Hourly at :05; night runs (00-02 UTC) meet a busy upstream and fail more records. Duration
/// spikes 9 and 4 days ago and on the latest run; memory crossing 500 MB once, 6 days ago.
fn analytics_flush(rng: &mut Rng, slot: DateTime<Utc>, hours_ago: i64, latest: bool) -> ExecutionReport {
    let started = slot + TimeDelta::minutes(5) + TimeDelta::seconds(rng.between(0, 40));
    let spike = latest || hours_ago == 9 * 24 + 7 || hours_ago == 4 * 24 + 13;
    let duration = if spike { rng.around(52_000.0, 0.1) } else { rng.around(4_500.0, 0.12) } as i64;
    // The latest run is a plain spike whatever the hour, so the open anomaly it carries is the same
    // at 00:30 as at 14:30.
    let night = started.hour() < 3 && !latest;
    let fetched = rng.between(140, 170);
    let failed = if night { rng.between(12, 30) } else { rng.between(0, 2) };
    let memory = if hours_ago == 6 * 24 + 3 { 640.0 } else { rng.around(118.0, 0.1) };
    ExecutionReport {
        data_verification: Some(DataVerification {
            records_fetched: fetched,
            records_processed: fetched - failed,
            records_stored: fetched - failed,
            records_failed: failed,
            validation_checks_passed: if night { 9 } else { 12 },
            validation_checks_failed: if night { 3 } else { 0 },
            validation_errors: if night { vec!["events.session_id: null in 3 % of rows".to_owned()] } else { vec![] },
            newest_record_age_seconds: Some(rng.around(45.0, 0.3)),
            api_calls_made: 4,
            api_calls_succeeded: 4,
            cache_hits: rng.between(80, 120),
            cache_misses: rng.between(5, 20),
            cache_writes: 4,
            ..Default::default()
        }),
        resource_metrics: Some(ResourceMetrics {
            memory_peak_mb: Some(memory),
            cpu_percent_avg: Some(rng.around(22.0, 0.2)),
            network_bytes_received: rng.between(200_000, 400_000),
            database_query_count: rng.between(12, 30),
            redis_operations: rng.between(40, 90),
        }),
        custom_metrics: custom(&[("events_flushed", fetched as f64), ("queue_depth_after", rng.between(0, 30) as f64)]),
        ..base(rng, "analytics_flush_worker", "analytics", started, duration)
    }
}

/// Hourly at :15; stopped reporting [`SILENT_FOR_HOURS`] hours ago (its schedule says hourly).
fn coach_cleanup(rng: &mut Rng, slot: DateTime<Utc>) -> ExecutionReport {
    let started = slot + TimeDelta::minutes(15) + TimeDelta::seconds(rng.between(0, 20));
    let removed = rng.between(0, 60);
    let duration = rng.around(1_800.0, 0.2) as i64;
    ExecutionReport {
        data_verification: Some(DataVerification {
            records_fetched: removed,
            records_processed: removed,
            records_stored: 0,
            validation_checks_passed: 3,
            ..Default::default()
        }),
        resource_metrics: Some(ResourceMetrics {
            memory_peak_mb: Some(rng.around(64.0, 0.05)),
            cpu_percent_avg: Some(rng.around(6.0, 0.3)),
            database_query_count: rng.between(2, 6),
            redis_operations: removed * 2,
            ..Default::default()
        }),
        custom_metrics: custom(&[("sessions_removed", removed as f64)]),
        ..base(rng, "coach_cleanup_worker", "coach", started, duration)
    }
}

/// Hourly at :30, calls an external API; its data is staler in the afternoon (UTC). The last six
/// runs hit the rate limit while the quota drains to zero.
fn intel_hourly(rng: &mut Rng, slot: DateTime<Utc>, hours_ago: i64) -> ExecutionReport {
    let started = slot + TimeDelta::minutes(30) + TimeDelta::seconds(rng.between(0, 30));
    let limited = hours_ago < 6;
    let quota = if limited { [0, 0, 6, 14, 25, 40][hours_ago as usize] } else { rng.between(300, 900) };
    let afternoon = (12..18).contains(&started.hour());
    let calls = rng.between(40, 60);
    let failed_calls = if limited { calls / 2 } else { rng.between(0, 1) };
    let fetched = if limited { rng.between(300, 500) } else { rng.between(900, 1100) };
    let invalid = if afternoon { rng.between(2, 5) } else { 0 };
    let duration = rng.around(38_000.0, 0.1) as i64;
    ExecutionReport {
        outcome: if limited { Outcome::Partial } else { Outcome::Success } as i32,
        error_message: if limited { "429 Too Many Requests from intel-feed API".to_owned() } else { String::new() },
        data_verification: Some(DataVerification {
            records_fetched: fetched,
            records_processed: fetched - invalid * 4,
            records_stored: fetched - invalid * 4,
            records_failed: invalid * 4,
            newest_record_age_seconds: Some(if afternoon { rng.around(2_400.0, 0.2) } else { rng.around(300.0, 0.2) }),
            expected_fields_present: Some(invalid == 0),
            missing_fields: if invalid > 1 { vec!["source.region".to_owned()] } else { vec![] },
            validation_checks_passed: 20 - invalid,
            validation_checks_failed: invalid,
            api_calls_made: calls,
            api_calls_succeeded: calls - failed_calls,
            api_calls_failed: failed_calls,
            api_rate_limited: limited,
            api_quota_remaining: Some(quota),
            ..Default::default()
        }),
        resource_metrics: Some(ResourceMetrics {
            memory_peak_mb: Some(rng.around(210.0, 0.08)),
            cpu_percent_avg: Some(rng.around(35.0, 0.15)),
            network_bytes_received: fetched * 2_000,
            database_query_count: rng.between(30, 60),
            ..Default::default()
        }),
        dependency_metrics: Some(DependencyMetrics {
            upstream_data_age_seconds: Some(rng.around(600.0, 0.3)),
            downstream_consumers_waiting: 1,
        }),
        custom_metrics: custom(&[("sources", 48.0), ("dedup_ratio", (rng.around(0.12, 0.2) * 100.0).round() / 100.0)]),
        ..base(rng, "intel_aggregation_hourly", "intel", started, duration)
    }
}

/// Daily at 03:00: recaps yesterday's clips. Three failures in a row 12-10 days ago, a partial
/// run 3 days ago.
fn clip_radar_recap(rng: &mut Rng, midnight: DateTime<Utc>, days_ago: i64) -> ExecutionReport {
    let started = midnight + TimeDelta::hours(3) + TimeDelta::seconds(rng.between(0, 90));
    let outcome = match days_ago {
        10..=12 => Outcome::Failed,
        3 => Outcome::Partial,
        _ => Outcome::Success,
    };
    let clips = rng.between(350, 420);
    let (processed, failed) = match outcome {
        Outcome::Failed => (0, clips),
        Outcome::Partial => (clips * 3 / 5, clips * 2 / 5),
        _ => (clips - rng.between(0, 3), 0),
    };
    let duration = rng.around(92_000.0, 0.1) as i64;
    ExecutionReport {
        outcome: outcome as i32,
        error_message: match outcome {
            Outcome::Failed => "video-index: connection refused (after 5 retries)".to_owned(),
            Outcome::Partial => "2 of 5 channels timed out".to_owned(),
            _ => String::new(),
        },
        data_verification: Some(DataVerification {
            records_fetched: clips,
            records_processed: processed,
            records_stored: processed,
            records_failed: failed,
            validation_checks_passed: 8,
            newest_record_age_seconds: Some(rng.around(3_600.0, 0.2)),
            api_calls_made: 5,
            api_calls_succeeded: if outcome == Outcome::Success { 5 } else { 3 },
            api_calls_failed: if outcome == Outcome::Success { 0 } else { 2 },
            ..Default::default()
        }),
        resource_metrics: Some(ResourceMetrics {
            memory_peak_mb: Some(rng.around(340.0, 0.1)),
            cpu_percent_avg: Some(rng.around(55.0, 0.1)),
            network_bytes_received: rng.between(40_000_000, 60_000_000),
            database_query_count: rng.between(60, 90),
            ..Default::default()
        }),
        custom_metrics: custom(&[("clips_recapped", processed as f64), ("channels", 5.0)]),
        ..base(rng, "clip_radar_recap_worker", "clip_radar", started, duration)
    }
}

/// Daily at 04:00: aggregates the day's intel. Missing fields 7 days ago (a quality drop); the
/// latest run succeeded having processed almost nothing (a silent success).
fn intel_daily(rng: &mut Rng, midnight: DateTime<Utc>, days_ago: i64) -> ExecutionReport {
    let started = midnight + TimeDelta::hours(4) + TimeDelta::seconds(rng.between(0, 60));
    let fetched = if days_ago == 0 { rng.between(300, 400) } else { rng.between(20_000, 24_000) };
    let degraded = days_ago == 7;
    let duration = rng.around(610_000.0, 0.08) as i64;
    ExecutionReport {
        data_verification: Some(DataVerification {
            records_fetched: fetched,
            records_processed: fetched,
            records_stored: fetched,
            records_failed: if degraded { fetched / 5 } else { rng.between(0, 10) },
            expected_fields_present: Some(!degraded),
            missing_fields: if degraded {
                vec!["entity.country".to_owned(), "entity.sector".to_owned(), "score.confidence".to_owned()]
            } else {
                vec![]
            },
            validation_checks_passed: if degraded { 14 } else { 40 },
            validation_checks_failed: if degraded { 26 } else { 0 },
            validation_errors: if degraded {
                vec!["schema v7 fields absent in 64 % of rows".to_owned()]
            } else {
                vec![]
            },
            newest_record_age_seconds: Some(rng.around(14_400.0, 0.2)),
            ..Default::default()
        }),
        resource_metrics: Some(ResourceMetrics {
            memory_peak_mb: Some(rng.around(420.0, 0.05)),
            cpu_percent_avg: Some(rng.around(60.0, 0.1)),
            database_query_count: rng.between(140, 180),
            ..Default::default()
        }),
        custom_metrics: custom(&[("entities", (fetched / 3) as f64)]),
        ..base(rng, "intel_aggregation_daily", "intel", started, duration)
    }
}

/// One guardian tick as the guardian reports it (`custom_metrics` as in `guardian.rs`): a busy
/// evening with a wave of orphaned `generation` streams about two hours ago.
fn guardian_tick(rng: &mut Rng, at: DateTime<Utc>, minutes_ago: i64) -> ExecutionReport {
    let wave = (110..=135).contains(&minutes_ago);
    let active = 30.0 + 12.0 * ((minutes_ago as f64) / 47.0).sin().abs() + rng.between(0, 4) as f64;
    let orphaned = if wave { rng.between(6, 9) as f64 } else { rng.between(0, 2) as f64 };
    let stale = rng.between(0, 3) as f64 + if wave { 4.0 } else { 0.0 };
    let healthy = (active - orphaned - stale).max(0.0);
    let rate = if active > 0.0 { orphaned / active } else { 0.0 };
    let by_type = Struct { fields: [("generation".to_owned(), number(orphaned))].into_iter().collect() };
    let mut fields: BTreeMap<String, Value> = [
        ("active_streams", active),
        ("healthy_streams", healthy),
        ("stale_streams", stale),
        ("orphaned_streams", orphaned),
        ("cleaned_streams", rng.between(0, 2) as f64),
        ("orphan_rate", rate),
        ("warnings", f64::from(u8::from(orphaned > 5.0) + u8::from(rate > 0.1))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), number(v)))
    .collect();
    fields.insert("orphaned_by_type".to_owned(), Value { kind: Some(Kind::StructValue(by_type)) });
    let duration = rng.between(2, 12);
    ExecutionReport {
        custom_metrics: Some(Struct { fields: fields.into_iter().collect() }),
        ..base(rng, GUARDIAN_WORKER, "sse", at, duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T14:37:12Z").map(|t| t.with_timezone(&Utc)).unwrap_or_default()
    }

    #[test]
    fn histories_are_deterministic_valid_and_in_order() {
        let a = histories(now(), 30);
        let b = histories(now(), 30);
        assert_eq!(a, b);
        assert!(a.len() > 2_500, "{} reports", a.len());
        for report in &a {
            assert!(validate_report(Some(report.clone()), now()).is_ok(), "{report:?}");
            assert!(finished_by(report, now()));
        }
        assert!(
            a.windows(2)
                .all(|w| w[0].started_at.as_ref().map(|t| t.seconds) <= w[1].started_at.as_ref().map(|t| t.seconds))
        );
    }

    #[test]
    fn the_latest_analytics_run_is_the_spike_at_every_minute_of_the_hour() {
        for minute in 0..60 {
            for second in [0, 30, 59] {
                let at = now().duration_trunc(TimeDelta::hours(1)).unwrap()
                    + TimeDelta::minutes(minute)
                    + TimeDelta::seconds(second);
                let latest = histories(at, 2)
                    .into_iter()
                    .filter(|r| r.worker_name == "analytics_flush_worker")
                    .max_by_key(|r| r.started_at.as_ref().map(|t| t.seconds))
                    .expect("an analytics run");
                assert!(latest.duration_ms > Some(40_000), "at {at}: latest run {:?} ms", latest.duration_ms);
            }
        }
    }

    #[test]
    fn the_latest_daily_intel_run_is_the_silent_success_around_its_run_time() {
        let midnight = now().duration_trunc(TimeDelta::days(1)).unwrap();
        for minute in (3 * 60 + 55)..(4 * 60 + 20) {
            let at = midnight + TimeDelta::minutes(minute);
            let latest = histories(at, 3)
                .into_iter()
                .filter(|r| r.worker_name == "intel_aggregation_daily")
                .max_by_key(|r| r.started_at.as_ref().map(|t| t.seconds))
                .expect("a daily run");
            let fetched = latest.data_verification.map_or(0, |d| d.records_fetched);
            assert!(fetched < 1_000, "at {at}: the latest daily run fetched {fetched}");
        }
    }

    #[test]
    fn every_worker_reports_and_the_silent_one_stopped() {
        let reports = histories(now(), 3);
        for (name, _, _) in WORKERS {
            assert!(reports.iter().any(|r| r.worker_name == name), "{name}");
        }
        let last_cleanup = reports
            .iter()
            .filter(|r| r.worker_name == "coach_cleanup_worker")
            .filter_map(|r| r.started_at.as_ref().map(|t| t.seconds))
            .max()
            .unwrap_or_default();
        assert!(now().timestamp() - last_cleanup > (SILENT_FOR_HOURS - 1) * 3600);
        let limited = reports.iter().filter(|r| r.worker_name == "intel_aggregation_hourly").rev().take(5);
        assert!(limited.filter(|r| r.data_verification.as_ref().is_some_and(|d| d.api_rate_limited)).count() >= 4);
    }
}
