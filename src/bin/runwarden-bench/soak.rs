//! `runwarden-bench soak`: a long run at half (`--fraction`) of the capacity measured first, in
//! the same run, with streams heartbeating and live watches open, sampled per slice: reports/s,
//! p99, server RSS and errors. `--check` turns the verdict into the exit code: zero errors, every
//! slice within 10 % of the target rate, p99 of the last slice at most 3x the median slice's, RSS
//! growth over the second half of the run under 15 %, and peak RSS under 200 MB. CI runs a
//! 60-second version at a quarter of the capacity with `--check`.
//!
//! RSS must not be confused with the SQLite writer's page cache (32 MiB by default), which fills as
//! the database grows and then holds. Before anything is measured the soak therefore streams
//! reports until the database file is twice that cache ([`WARM_UP_BYTES`]), so that the cache is
//! full when the soak starts, however fast the machine is: without this, a CI soak at a quarter of
//! a slow machine's capacity wrote too little to fill it in 60 s and its RSS rose 16 % over the
//! second half; filled first, the same soak's RSS held flat (77.3 → 77.3 MB). RSS is still judged
//! over the second half, and each slice shows the database file's size beside it, so a reader can
//! tell a leak (RSS grows, the database does not explain it) from a cache.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use runwarden::proto::v1::{
    HeartbeatRequest, OpenStreamRequest, SubmitReportRequest, WatchExecutionsRequest, WatchHealthRequest,
    guardian_service_client::GuardianServiceClient, query_service_client::QueryServiceClient,
    report_service_client::ReportServiceClient,
};
use tonic::transport::Channel;

use crate::ingest::{ServerProcess, Shape, drive, measure, sample_report};

/// Fewest paced senders sharing the target rate.
const MIN_SENDERS: u64 = 32;

/// How long a sender's call may take before it misses its next send: with more senders each
/// waits longer between sends, and the rate holds as long as calls answer within this.
const SEND_BUDGET: Duration = Duration::from_millis(25);
const STREAMS: usize = 200;
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// The size of the database file the warm-up fills to: twice the writer's page cache, so that the
/// cache has held as many distinct pages as it can. The file alone, not its WAL: the WAL file is
/// reused, not shrunk, after a checkpoint, and holds many copies of the pages each commit changes,
/// so its size overstates the distinct pages written (docs/performance.md, twenty-second session).
const WARM_UP_BYTES: u64 = runwarden::store::DEFAULT_WRITER_CACHE_MIB as u64 * 2 * 1024 * 1024;

/// The warm-up stops here even if the database is still smaller (a very slow machine); the soak
/// then says so.
const WARM_UP_LIMIT: Duration = Duration::from_secs(120);

#[derive(Default)]
struct Slice {
    latencies: Vec<Duration>,
    errors: u64,
}

pub async fn run(binary: &str, seconds: u64, slice: u64, fraction: f64, check: bool) -> bool {
    let dir = std::env::temp_dir().join(format!("runwarden-soak-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let database = dir.join("soak.db");
    let url = format!("sqlite://{}?mode=rwc", database.display());
    let server =
        ServerProcess::start(binary, &["--log-format", "json", "serve", "--listen", "127.0.0.1:0", "--database", &url]);
    let channel =
        Channel::from_shared(format!("http://{}", server.addr)).expect("uri").connect().await.expect("connect");
    let warm_up = Instant::now();
    while database_bytes(&database) < WARM_UP_BYTES && warm_up.elapsed() < WARM_UP_LIMIT {
        drive(ReportServiceClient::new(channel.clone()), Shape::Stream(100), 4, Duration::from_secs(2)).await;
    }
    let warmed = database_bytes(&database);
    let short =
        if warmed < WARM_UP_BYTES { " (short of the target: the writer's cache may still be filling)" } else { "" };
    println!(
        "warm-up: database file {:.1} MB after {:.0} s of streaming{short}; server RSS {:.1} MB",
        mb(warmed),
        warm_up.elapsed().as_secs_f64(),
        server.rss_mb()
    );
    let capacity = measure("capacity", &server, Shape::Unary, 64, Duration::from_secs(10)).await.rate();
    let target = capacity * fraction;
    let sender_count = MIN_SENDERS.max((target * SEND_BUDGET.as_secs_f64()).ceil() as u64);
    println!(
        "capacity {capacity:.0} reports/s (unary, 64 in flight, 10 s); soaking at {target:.0}/s for {seconds} s, {sender_count} paced senders"
    );

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background_errors = Arc::new(AtomicU64::new(0));
    let watched = Arc::new(AtomicU64::new(0));
    let mut background = Vec::new();
    // Streams that heartbeat, and watches that read.
    let mut guardian = GuardianServiceClient::new(channel.clone());
    let mut ids = Vec::with_capacity(STREAMS);
    for i in 0..STREAMS {
        let request =
            OpenStreamRequest { stream_type: "generation".into(), owner: format!("soak-{i}"), ..Default::default() };
        ids.push(guardian.open_stream(request).await.expect("open stream").into_inner().stream_id);
    }
    {
        let (mut guardian, stop, errors) = (guardian.clone(), stop.clone(), background_errors.clone());
        background.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                for id in &ids {
                    if guardian.heartbeat(HeartbeatRequest { stream_id: id.clone() }).await.is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for _ in 0..4 {
        let (mut query, stop, watched) = (QueryServiceClient::new(channel.clone()), stop.clone(), watched.clone());
        background.push(tokio::spawn(async move {
            let Ok(response) = query.watch_executions(WatchExecutionsRequest::default()).await else { return };
            let mut stream = response.into_inner();
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(500), stream.next()).await {
                    Ok(Some(Ok(_))) => {
                        watched.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => return,
                    Err(_) => {}
                }
            }
        }));
    }
    {
        let (mut guardian, stop) = (guardian.clone(), stop.clone());
        background.push(tokio::spawn(async move {
            let Ok(response) = guardian.watch_health(WatchHealthRequest::default()).await else { return };
            let mut stream = response.into_inner();
            while !stop.load(Ordering::Relaxed) {
                let _ = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
            }
        }));
    }

    // Paced senders.
    let current = Arc::new(Mutex::new(Slice::default()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let per_sender = Duration::from_secs_f64(sender_count as f64 / target.max(1.0));
    let mut senders = Vec::new();
    for s in 0..sender_count {
        let mut client = ReportServiceClient::new(channel.clone());
        let current = current.clone();
        senders.push(tokio::spawn(async move {
            // Staggered starts: the senders' sends are spread over the interval, not in bursts.
            let offset = per_sender.mul_f64(s as f64 / sender_count as f64);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, per_sender);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut i = (s + 1) * 10_000_000_000;
            while Instant::now() < deadline {
                tick.tick().await;
                i += 1;
                let call = Instant::now();
                let result = client.submit_report(SubmitReportRequest { report: Some(sample_report(i)) }).await;
                let took = call.elapsed();
                if let Ok(mut slice) = current.lock() {
                    match result {
                        Ok(_) => slice.latencies.push(took),
                        Err(_) => slice.errors += 1,
                    }
                }
            }
        }));
    }

    println!("| second | reports/s | p50 ms | p99 ms | errors | server RSS MB | database file MB |");
    println!("|---|---|---|---|---|---|---|");
    let mut rows: Vec<(f64, Duration, u64, f64)> = Vec::new();
    let mut slice_start = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(slice).min(deadline.saturating_duration_since(Instant::now()))).await;
        let taken = std::mem::take(&mut *current.lock().expect("lock"));
        let elapsed = slice_start.elapsed().as_secs_f64();
        slice_start = Instant::now();
        let mut latencies = taken.latencies;
        latencies.sort_unstable();
        let quantile =
            |q: f64| latencies.get(((latencies.len().max(1) - 1) as f64 * q) as usize).copied().unwrap_or_default();
        let rate = latencies.len() as f64 / elapsed;
        let rss = server.rss_mb();
        println!(
            "| {:.0} | {rate:.0} | {:.2} | {:.2} | {} | {rss:.1} | {:.1} |",
            started.elapsed().as_secs_f64(),
            quantile(0.5).as_secs_f64() * 1000.0,
            quantile(0.99).as_secs_f64() * 1000.0,
            taken.errors,
            mb(database_bytes(&database)),
        );
        rows.push((rate, quantile(0.99), taken.errors, rss));
    }
    for sender in senders {
        let _ = sender.await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in background {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    let background_errors = background_errors.load(Ordering::Relaxed);
    println!(
        "peak RSS {:.1} MB; {} executions seen by the watches; {background_errors} heartbeat errors",
        server.peak_rss_mb(),
        watched.load(Ordering::Relaxed)
    );
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
    verdict(&rows, target, background_errors, check)
}

/// The size of the database file (zero before it exists). Pages still only in the WAL are not
/// counted: the file catches up at each checkpoint.
fn database_bytes(database: &std::path::Path) -> u64 {
    std::fs::metadata(database).map(|m| m.len()).unwrap_or(0)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Prints (and with `check`, enforces) the steadiness criteria of the module docs. The last
/// slice may be short, so it is judged on errors and p99 only.
fn verdict(rows: &[(f64, Duration, u64, f64)], target: f64, background_errors: u64, check: bool) -> bool {
    if rows.len() < 2 {
        println!("verdict: too short to judge");
        return !check;
    }
    let full = &rows[..rows.len() - 1];
    let errors: u64 = rows.iter().map(|r| r.2).sum::<u64>() + background_errors;
    let slowest_rate = full.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
    let mut p99s: Vec<Duration> = rows.iter().map(|r| r.1).collect();
    p99s.sort_unstable();
    let median_p99 = p99s[p99s.len() / 2];
    let last_p99 = rows[rows.len() - 1].1;
    let rss_first = rows[0].3;
    let rss_mid = rows[(rows.len() - 1) / 2].3;
    let rss_max = rows.iter().map(|r| r.3).fold(0.0, f64::max);
    let rss_max_late = rows[(rows.len() - 1) / 2..].iter().map(|r| r.3).fold(0.0, f64::max);
    let growth = if rss_mid > 0.0 { rss_max_late / rss_mid - 1.0 } else { 0.0 };
    let checks = [
        ("zero errors", errors == 0, format!("{errors}")),
        (
            "every slice within 10 % of the target rate",
            slowest_rate >= 0.9 * target,
            format!("slowest {slowest_rate:.0}/s vs {target:.0}/s"),
        ),
        (
            "last p99 at most 3x the median p99",
            last_p99 <= median_p99 * 3,
            format!("{:.2} ms vs {:.2} ms", last_p99.as_secs_f64() * 1000.0, median_p99.as_secs_f64() * 1000.0),
        ),
        (
            "RSS growth over the second half under 15 %",
            growth < 0.15,
            format!(
                "{rss_mid:.1} -> {rss_max_late:.1} MB ({:+.0} %; from the first slice {rss_first:.1} MB)",
                growth * 100.0
            ),
        ),
        ("peak RSS under 200 MB", rss_max < 200.0, format!("{rss_max:.1} MB")),
    ];
    let mut ok = true;
    for (name, passed, detail) in checks {
        println!("{} {name}: {detail}", if passed { "ok  " } else { "FAIL" });
        ok &= passed;
    }
    !check || ok
}
