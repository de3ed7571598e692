//! Worker statistics, the data-quality summary and the workers' health summary, checked against
//! figures computed here from the submitted reports; and rollups rebuilt from raw executions are
//! identical to the ones maintained at ingest.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use runwarden::{
    domain::{
        rollup::{HOUR_US, Period},
        validation::to_timestamp,
    },
    proto::v1::{
        DataVerification, ExecutionReport, GetDataQualitySummaryRequest, GetWorkerStatsRequest, ListWorkersRequest,
        Outcome, QualityLevel, StatsWindow, SubmitReportResponse, TrendBucket,
    },
    store::{Store, StoreOptions, rollups, to_micros},
};
use serde_json::Value;
use tonic::Code;

use crate::{
    backend_tests,
    helpers::{Backend, TestApp, report, spawn_app, spawn_app_with},
};

backend_tests!(
    worker_stats_match_an_independent_computation,
    data_quality_summary_matches_and_orders_worst_first,
    rebuilt_rollups_equal_incremental_ones,
    stats_errors_and_rest_routes,
);

/// A small deterministic generator (splitmix64), so failures reproduce.
struct TestRng(u64);

impl TestRng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn random_range<T: RangeValue>(&mut self, range: std::ops::Range<T>) -> T {
        T::pick(range, self.next())
    }
}

trait RangeValue: Sized {
    fn pick(range: std::ops::Range<Self>, bits: u64) -> Self;
}

impl RangeValue for i64 {
    fn pick(range: std::ops::Range<i64>, bits: u64) -> i64 {
        range.start + (bits % (range.end - range.start) as u64) as i64
    }
}

impl RangeValue for usize {
    fn pick(range: std::ops::Range<usize>, bits: u64) -> usize {
        range.start + (bits % (range.end - range.start) as u64) as usize
    }
}

impl RangeValue for f64 {
    fn pick(range: std::ops::Range<f64>, bits: u64) -> f64 {
        range.start + (bits >> 11) as f64 / (1u64 << 53) as f64 * (range.end - range.start)
    }
}

/// A submitted run and what the server answered.
struct Sent {
    worker: String,
    started: DateTime<Utc>,
    outcome: Outcome,
    duration_ms: i64,
    data: DataVerification,
    response: SubmitReportResponse,
}

fn random_report(rng: &mut TestRng, worker: &str, started: DateTime<Utc>) -> ExecutionReport {
    let outcomes = [
        Outcome::Success,
        Outcome::Success,
        Outcome::Success,
        Outcome::Partial,
        Outcome::Failed,
        Outcome::Timeout,
        Outcome::Skipped,
    ];
    let processed = rng.random_range(0..500);
    ExecutionReport {
        execution_id: uuid::Uuid::new_v4().to_string(),
        started_at: Some(to_timestamp(started)),
        duration_ms: Some(rng.random_range(0..20_000)),
        outcome: outcomes[rng.random_range(0..outcomes.len())] as i32,
        data_verification: Some(DataVerification {
            records_fetched: processed + rng.random_range(0..20),
            records_processed: processed,
            records_failed: rng.random_range(0..10),
            validation_checks_passed: rng.random_range(0..10),
            validation_checks_failed: rng.random_range(0..3),
            api_rate_limited: rng.random_range(0i64..10) == 0,
            missing_fields: (0..rng.random_range(0i64..3)).map(|i| format!("field_{i}")).collect(),
            newest_record_age_seconds: (rng.random_range(0i64..2) == 0).then(|| rng.random_range(0.0..100_000.0)),
            ..Default::default()
        }),
        ..report(worker)
    }
}

/// Submits `per_worker` random runs for each worker, spread over the last `span_hours`.
async fn submit_random(
    app: &TestApp,
    rng: &mut TestRng,
    workers: &[&str],
    per_worker: usize,
    span_hours: i64,
) -> Vec<Sent> {
    let now = Utc::now();
    let mut sent = Vec::new();
    for worker in workers {
        for _ in 0..per_worker {
            let started = now - TimeDelta::seconds(rng.random_range(60..span_hours * 3600));
            let r = random_report(rng, worker, started);
            let response = app.submit(r.clone()).await.expect("stored");
            sent.push(Sent {
                worker: worker.to_string(),
                started,
                outcome: r.outcome(),
                duration_ms: r.duration_ms.unwrap_or(0),
                data: r.data_verification.unwrap_or_default(),
                response,
            });
        }
    }
    sent
}

fn in_window(started: DateTime<Utc>, since: Option<pbjson_types::Timestamp>) -> bool {
    let since_us = since.map_or(0, |t| t.seconds * 1_000_000);
    to_micros(started).div_euclid(HOUR_US) * HOUR_US >= since_us
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

async fn worker_stats_match_an_independent_computation(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut rng = TestRng(0x9e37_79b9_7f4a_7c15);
    let sent =
        submit_random(&app, &mut rng, &["intel_aggregation_hourly", "analytics_flush_worker"], 150, 6 * 24).await;

    for window in [StatsWindow::StatsWindow24h, StatsWindow::StatsWindow7d] {
        let stats = app
            .query
            .clone()
            .get_worker_stats(GetWorkerStatsRequest {
                worker_name: "intel_aggregation_hourly".into(),
                window: window as i32,
                ..Default::default()
            })
            .await
            .expect("stats")
            .into_inner();
        let runs: Vec<&Sent> = sent
            .iter()
            .filter(|s| s.worker == "intel_aggregation_hourly" && in_window(s.started, stats.since))
            .collect();
        let count = |o: Outcome| runs.iter().filter(|s| s.outcome == o).count() as i64;
        assert!(!runs.is_empty());
        assert_eq!(stats.total_executions, runs.len() as i64, "{window:?}");
        assert_eq!(stats.successful_executions, count(Outcome::Success));
        assert_eq!(stats.failed_executions, count(Outcome::Failed));
        assert_eq!(stats.partial_executions, count(Outcome::Partial));
        assert_eq!(stats.timed_out_executions, count(Outcome::Timeout));
        assert_eq!(stats.skipped_executions, count(Outcome::Skipped));
        let judged = runs.len() as i64 - count(Outcome::Skipped);
        assert!(close(stats.success_rate, count(Outcome::Success) as f64 / judged as f64));

        let n = runs.len() as f64;
        let mut durations: Vec<i64> = runs.iter().map(|s| s.duration_ms).collect();
        durations.sort_unstable();
        assert!(close(stats.avg_duration_ms, durations.iter().sum::<i64>() as f64 / n));
        assert_eq!(stats.max_duration_ms, *durations.last().expect("runs"));
        for (q, estimate) in [(0.5, stats.p50_duration_ms), (0.95, stats.p95_duration_ms)] {
            let exact = durations[(q * (n - 1.0)).floor() as usize] as f64;
            assert!((estimate - exact).abs() <= 0.02 * exact, "p{q}: {estimate} vs exact {exact}");
        }
        let total = |f: fn(&DataVerification) -> i64| runs.iter().map(|s| f(&s.data)).sum::<i64>();
        assert_eq!(stats.total_records_processed, total(|d| d.records_processed));
        assert_eq!(stats.total_records_fetched, total(|d| d.records_fetched));
        assert_eq!(stats.total_records_failed, total(|d| d.records_failed));
        assert!(close(stats.avg_records_processed, total(|d| d.records_processed) as f64 / n));

        let mean_score = |f: fn(&runwarden::proto::v1::Scores) -> f64| {
            runs.iter().map(|s| f(&s.response.scores.unwrap_or_default())).sum::<f64>() / n
        };
        let avg = stats.average_scores.expect("scores");
        assert!(close(avg.overall, mean_score(|s| s.overall)));
        assert!(close(avg.data_quality, mean_score(|s| s.data_quality)));
        assert!(close(avg.reliability, mean_score(|s| s.reliability)));

        let trend_total: i64 = stats.score_trend.iter().map(|p| p.count).sum();
        assert_eq!(trend_total, stats.total_executions);
        assert_eq!(stats.trend_bucket, TrendBucket::Hour as i32, "windows up to 7d are hourly");
    }

    // Rolling averages cover the latest runs by start time, whatever the window.
    let stats = app
        .query
        .clone()
        .get_worker_stats(GetWorkerStatsRequest { worker_name: "analytics_flush_worker".into(), ..Default::default() })
        .await
        .expect("stats")
        .into_inner();
    let mut runs: Vec<&Sent> = sent.iter().filter(|s| s.worker == "analytics_flush_worker").collect();
    runs.sort_by_key(|s| std::cmp::Reverse(s.started));
    let last_10 = stats.last_10.expect("last 10");
    assert_eq!(last_10.runs, 10);
    let expected = runs[..10].iter().map(|s| s.response.scores.unwrap_or_default().overall).sum::<f64>() / 10.0;
    assert!(close(last_10.avg_overall_score, expected));
    let last_100 = stats.last_100.expect("last 100");
    assert_eq!(last_100.runs, 100);
    let expected = runs[..100].iter().map(|s| s.duration_ms as f64).sum::<f64>() / 100.0;
    assert!(close(last_100.avg_duration_ms, expected));
    let level = runwarden::domain::scoring::QualityLevel::from_score(last_10.avg_overall_score);
    assert_eq!(stats.quality_level, runwarden::domain::analysis::quality_level_to_proto(level) as i32);

    // The 90-day window buckets by day.
    let stats = app
        .query
        .clone()
        .get_worker_stats(GetWorkerStatsRequest {
            worker_name: "analytics_flush_worker".into(),
            window: StatsWindow::StatsWindow90d as i32,
            ..Default::default()
        })
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(stats.total_executions, 150);
    assert_eq!(stats.trend_bucket, TrendBucket::Day as i32);
    assert!(stats.score_trend.len() <= 8);

    // The workers list carries each worker's 24-hour health.
    let workers = app.query.clone().list_workers(ListWorkersRequest::default()).await.expect("workers").into_inner();
    let since_24h = Some(to_timestamp(
        DateTime::from_timestamp_micros((to_micros(Utc::now()).div_euclid(HOUR_US) + 1) * HOUR_US - 24 * HOUR_US)
            .expect("time"),
    ));
    for worker in workers.workers {
        let runs: Vec<&Sent> =
            sent.iter().filter(|s| s.worker == worker.worker_name && in_window(s.started, since_24h)).collect();
        assert_eq!(worker.runs_24h, runs.len() as i64);
        let judged = runs.iter().filter(|s| s.outcome != Outcome::Skipped).count();
        let successful = runs.iter().filter(|s| s.outcome == Outcome::Success).count();
        let expected = (judged > 0).then(|| successful as f64 / judged as f64);
        assert_eq!(worker.success_rate_24h, expected);
        let latest = sent.iter().filter(|s| s.worker == worker.worker_name).max_by_key(|s| s.started).expect("latest");
        assert_eq!(worker.last_quality_level, latest.response.quality_level);
    }
}

async fn data_quality_summary_matches_and_orders_worst_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut rng = TestRng(0x9e37_79b9_7f4a_7c15);
    let workers = ["clip_radar_recap_worker", "coach_cleanup_worker", "intel_aggregation_daily"];
    let sent = submit_random(&app, &mut rng, &workers, 60, 5 * 24).await;
    let summary = app
        .query
        .clone()
        .get_data_quality_summary(GetDataQualitySummaryRequest {
            window: StatsWindow::StatsWindow7d as i32,
            ..Default::default()
        })
        .await
        .expect("summary")
        .into_inner();
    assert_eq!(summary.total_executions, sent.len() as i64);
    let sum = |f: &dyn Fn(&Sent) -> i64| sent.iter().map(f).sum::<i64>();
    assert_eq!(summary.total_records_processed, sum(&|s| s.data.records_processed));
    assert_eq!(summary.total_validation_failures, sum(&|s| s.data.validation_checks_failed));
    assert_eq!(summary.rate_limit_incidents, sum(&|s| i64::from(s.data.api_rate_limited)));
    let overall =
        sent.iter().map(|s| s.response.scores.unwrap_or_default().data_quality).sum::<f64>() / sent.len() as f64;
    assert!(close(summary.overall_data_quality_score, overall));
    assert_ne!(summary.overall_quality_level, QualityLevel::Unspecified as i32);

    assert_eq!(summary.workers.len(), 3);
    for pair in summary.workers.windows(2) {
        assert!(pair[0].mean_data_quality_score <= pair[1].mean_data_quality_score, "worst first");
    }
    let mut by_name: HashMap<&str, Vec<&Sent>> = HashMap::new();
    for s in &sent {
        by_name.entry(s.worker.as_str()).or_default().push(s);
    }
    for w in &summary.workers {
        let runs = &by_name[w.worker_name.as_str()];
        assert_eq!(w.runs, runs.len() as i64);
        assert_eq!(w.records_failed, runs.iter().map(|s| s.data.records_failed).sum::<i64>());
        assert_eq!(w.validation_failures, runs.iter().map(|s| s.data.validation_checks_failed).sum::<i64>());
        assert_eq!(w.missing_fields, runs.iter().map(|s| s.data.missing_fields.len() as i64).sum::<i64>());
        assert_eq!(w.rate_limited_runs, runs.iter().filter(|s| s.data.api_rate_limited).count() as i64);
        let stalest = runs
            .iter()
            .filter_map(|s| s.data.newest_record_age_seconds)
            .fold(None, |m: Option<f64>, a| Some(m.map_or(a, |m| m.max(a))));
        assert_eq!(w.stalest_newest_record_age_seconds, stalest);
        let mean =
            runs.iter().map(|s| s.response.scores.unwrap_or_default().data_quality).sum::<f64>() / runs.len() as f64;
        assert!(close(w.mean_data_quality_score, mean));
    }
}

async fn rebuilt_rollups_equal_incremental_ones(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut rng = TestRng(0x9e37_79b9_7f4a_7c15);
    // Concurrent submissions, so batches mix workers, hours and duplicates.
    let now = Utc::now();
    let reports: Vec<ExecutionReport> = (0..400)
        .map(|i| {
            let started = now - TimeDelta::seconds(rng.random_range(60..30 * 24 * 3600));
            random_report(&mut rng, &format!("worker_{}", i % 5), started)
        })
        .collect();
    let with_duplicates: Vec<ExecutionReport> = reports.iter().chain(reports.iter().take(50)).cloned().collect();
    let calls = with_duplicates.into_iter().map(|r| {
        let app = &app;
        async move { app.submit(r).await.expect("stored") }
    });
    futures::future::join_all(calls).await;
    let db = app.stop().await;

    let store = Store::connect(&db.url, &StoreOptions::default()).await.expect("open");
    let incremental = rollups::all(store.reader()).await.expect("rollups");
    assert!(!incremental.is_empty());
    for period in Period::ALL {
        let runs: i64 = incremental.iter().filter(|((_, p, _), _)| *p == period).map(|(_, r)| r.runs).sum();
        assert_eq!(runs, 400, "{period:?} rollups count every stored run once");
    }
    let read = rollups::rebuild(&store).await.expect("rebuild");
    assert_eq!(read, 400);
    let rebuilt = rollups::all(store.reader()).await.expect("rollups");
    assert_eq!(rebuilt, incremental, "rebuilt rollups are identical to incremental ones");
    store.close().await;
    drop(spawn_app_with(db, |_| {}).await);
}

async fn stats_errors_and_rest_routes(backend: Backend) {
    let app = spawn_app(backend).await;
    app.submit(report("intel_aggregation_hourly")).await.expect("stored");
    let status = app
        .query
        .clone()
        .get_worker_stats(GetWorkerStatsRequest { worker_name: "nobody".into(), ..Default::default() })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    let status = app
        .query
        .clone()
        .get_worker_stats(GetWorkerStatsRequest {
            worker_name: "intel_aggregation_hourly".into(),
            window: 17,
            ..Default::default()
        })
        .await
        .expect_err("bad window");
    assert_eq!(status.code(), Code::InvalidArgument);

    let stats: Value = app
        .http
        .get(app.url("/api/v1/orchestrator/workers/intel_aggregation_hourly/stats?window=7d"))
        .send()
        .await
        .expect("rest")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["total_executions"], Value::from("1"));
    assert_eq!(stats["successful_executions"], Value::from("1"));
    assert_eq!(stats["failed_executions"], Value::from("0"));
    assert_eq!(stats["trend_bucket"], Value::from("TREND_BUCKET_HOUR"));
    let response = app
        .http
        .get(app.url("/api/v1/orchestrator/workers/intel_aggregation_hourly/stats?window=2w"))
        .send()
        .await
        .expect("rest");
    assert_eq!(response.status(), 400);
    let summary: Value = app
        .http
        .get(app.url("/api/v1/orchestrator/data-quality/summary"))
        .send()
        .await
        .expect("rest")
        .json()
        .await
        .expect("json");
    assert_eq!(summary["total_executions"], Value::from("1"));
    assert_eq!(summary["workers"][0]["worker_name"], Value::from("intel_aggregation_hourly"));
}
