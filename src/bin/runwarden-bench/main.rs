//! `runwarden-bench`: measurements that live in the repository, reported as figures and as
//! ratios against a baseline measured in the same run.
//!
//! `runwarden-bench stats --rows 1000000 [--database URL]` loads a synthetic history (50 workers,
//! 90 days) through the ingest writer's own commit path, then times the read RPCs over gRPC
//! (p50/p99 of 200 calls each) next to the same figures computed by scanning raw executions.
//! - `runwarden-bench ingest [--quick] [--postgres URL]` measures report ingest against the wire
//!   (a bare tonic echo server) and the storage (raw inserts), see `ingest.rs`.
//! - `runwarden-bench guardian [--streams 100000 --heartbeats 5000]`: tick duration, heartbeat
//!   latency and ingest with and without heartbeats, see `guardian.rs`.
//! - `runwarden-bench overload [--in-flight 2000 --seconds 10]`: shedding under a flood, see
//!   `overload.rs`.
//! - `runwarden-bench soak [--seconds 600 --slice 60] [--check]`: half of the measured capacity
//!   with heartbeats and watches, per-slice throughput, p99, RSS and errors, see `soak.rs`.
//! - `runwarden-bench raw [--per-transaction 1000 --seconds 10]`: the storage limit alone.
//! - `runwarden-bench load --addr HOST:PORT [--shape unary|stream:N|batch:N --in-flight 256]
//!   [--server-pid PID [--rss-every SECS]]`: one ingest shape against a server that is already
//!   running, to profile it meanwhile (`perf record -p PID`); prints the CPU per report of the
//!   load and of the server (by thread name too, with each name's time waiting for a CPU), and
//!   the server's RSS over the run.

mod guardian;
mod ingest;
mod minimal;
mod overload;
mod soak;

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use clap::{Parser, Subcommand};
use runwarden::{
    App, Config,
    domain::{scoring::ScoringConfig, validation::validate_report},
    proto::v1::{
        DataVerification, ExecutionReport, GetDataQualitySummaryRequest, GetWorkerStatsRequest, ListExecutionsRequest,
        ListWorkersRequest, Outcome, ResourceMetrics, StatsWindow, query_service_client::QueryServiceClient,
    },
    store::{Store, StoreOptions, ingest::write_batch, to_micros},
};
use sea_orm::{ConnectionTrait, Statement};
use tonic::transport::Channel;

#[derive(Parser)]
#[command(name = "runwarden-bench", about = "runwarden's benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
    /// The execution ids the generated reports carry: random UUIDv4 (the worst case for the
    /// server's unique index) or time-ordered UUIDv7 (what the Python client makes).
    #[arg(long, global = true, value_enum, default_value_t = Ids::V4)]
    ids: Ids,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Ids {
    V4,
    V7,
}

#[derive(Subcommand)]
enum Bench {
    /// Query latency at a given number of stored executions, against raw scans.
    Stats {
        /// Executions to load.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 50)]
        workers: u64,
        #[arg(long, default_value_t = 90)]
        days: i64,
        /// Calls per measured query.
        #[arg(long, default_value_t = 200)]
        calls: usize,
        /// Database URL (default: a fresh SQLite file in a temp dir). A PostgreSQL URL must name
        /// an empty database.
        #[arg(long)]
        database: Option<String>,
        /// Reuse an already loaded database instead of loading.
        #[arg(long)]
        no_load: bool,
    },
    /// Ingest throughput and latency: wire limit, runwarden unary/stream/batch, storage limit.
    Ingest {
        /// About 30 seconds in all instead of 10 s per configuration.
        #[arg(long)]
        quick: bool,
        /// Seconds per configuration (overrides --quick's 2 and the default 10).
        #[arg(long)]
        seconds: Option<u64>,
        /// Also measure on this PostgreSQL server (fresh databases are created on it).
        #[arg(long)]
        postgres: Option<String>,
    },
    /// Ingest on an empty database and on one already holding `--rows` executions, in alternating
    /// rounds.
    IngestAtScale {
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Alternating rounds (an empty database, then the full one, or the other way round).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Half of the measured capacity for a long time, with heartbeats and watches, sampling
    /// throughput, p99, RSS and errors (see `soak.rs`).
    Soak {
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Length of each sample.
        #[arg(long, default_value_t = 60)]
        slice: u64,
        /// The rate to hold, as a fraction of the capacity measured first (above 0, at most 1).
        #[arg(long, default_value_t = 0.5, value_parser = fraction)]
        fraction: f64,
        /// Exit 1 unless the run was steady (zero errors, rate, p99, RSS).
        #[arg(long)]
        check: bool,
    },
    /// A flood far above capacity: shedding, admitted throughput, peak RSS, recovery.
    Overload {
        #[arg(long, default_value_t = 2_000)]
        in_flight: usize,
        /// HTTP/2 connections the callers share.
        #[arg(long, default_value_t = 8)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Where the load generator runs: `shared` (both cores, same priority), `nice` (at nice
        /// 19) or `split-cores` (server on core 1, generator on core 0), the last two as if the
        /// callers were on other machines.
        #[arg(long, value_enum, default_value = "shared")]
        generator: overload::Generator,
        /// Same as `--generator nice`.
        #[arg(long, conflicts_with = "generator")]
        nice_generator: bool,
        /// The server's `--admission-wait-ms` (default: the server's default).
        #[arg(long)]
        admission_wait_ms: Option<u64>,
    },
    /// The stream guardian at scale: tick duration over many streams, heartbeat latency, and
    /// ingest with and without a heartbeat load.
    Guardian {
        #[arg(long, default_value_t = 100_000)]
        streams: usize,
        #[arg(long, default_value_t = 5_000)]
        heartbeats: u64,
        /// Ids per HeartbeatBatch call in the batched phases.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Rounds of (one call each, batched) loaded phases, each between two baseline phases.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Length of each ingest measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 2.0)]
        tick_seconds: f64,
        /// The server's heartbeat flush interval (`[guardian] heartbeat_flush_seconds`).
        #[arg(long, default_value_t = 2.0)]
        flush_seconds: f64,
    },
    /// Drives an already running server with one ingest shape (for profiling it meanwhile).
    Load {
        /// The server's gRPC address, HOST:PORT.
        #[arg(long)]
        addr: String,
        /// `unary`, `stream:N` (SubmitReports, N per stream) or `batch:N` (SubmitReportBatch).
        #[arg(long, default_value = "unary")]
        shape: String,
        #[arg(long, default_value_t = 256)]
        in_flight: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// The server's process id, to print its CPU per report too, in all and by thread name,
        /// and each thread name's time waiting for a CPU (read from /proc).
        #[arg(long)]
        server_pid: Option<u32>,
        /// With `--server-pid`: print the server's resident memory every this many seconds, and
        /// the first, last and largest samples at the end (for growth over a long run).
        #[arg(long, requires = "server_pid", value_parser = clap::value_parser!(u64).range(1..))]
        rss_every: Option<u64>,
    },
    /// The storage limit on its own: raw inserts of the benchmark's rows into a fresh SQLite file
    /// (or the PostgreSQL database `--database` names), as the ingest benchmark measures it.
    Raw {
        /// Rows per transaction.
        #[arg(long, default_value_t = 1000)]
        per_transaction: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Database URL (default: a fresh SQLite file in a temp dir).
        #[arg(long)]
        database: Option<String>,
        /// Workers the rows are spread over, in turn (the ingest benchmark's reports name 20).
        #[arg(long, default_value_t = ingest::REPORT_WORKERS)]
        workers: u64,
        /// SQLite only: the same statements on a bare rusqlite connection (no gate, no sea-orm)
        /// instead of the server's ingest connection.
        #[arg(long)]
        c_api: bool,
        /// The same statements through sqlx's writer connection (the server's ingest writer's
        /// driver before it had a C API connection of its own on SQLite).
        #[arg(long, conflicts_with = "c_api")]
        sqlx: bool,
    },
    /// The bare tonic echo server the ingest benchmark uses as the wire limit.
    EchoServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Answer unary calls in groups, each "committed" by a sleep of this many microseconds
        /// (no CPU), as a group-commit writer would: the limit its cadence alone sets.
        #[arg(long)]
        commit_us: Option<u64>,
    },
    /// The reference design, built minimally: tonic and a group-commit writer on SQLite
    /// (WAL, synchronous=FULL), no other work per report (the ingest benchmark measures it).
    MinimalServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// The SQLite file to store into (created if missing).
        #[arg(long)]
        database: std::path::PathBuf,
    },
}

/// splitmix64: a deterministic, dependency-free generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One synthetic run of `worker` that started `ago_s` seconds ago.
fn synthetic_report(rng: &mut Rng, worker: u64, ago_s: i64) -> ExecutionReport {
    let now = Utc::now();
    let base_ms = 500.0 + 400.0 * worker as f64;
    // Roughly log-normal: the base scaled by e^(N(0, 0.4)) from a sum of uniforms.
    let noise: f64 = (0..4).map(|_| rng.unit() - 0.5).sum::<f64>() * 0.7;
    let duration = (base_ms * noise.exp()) as i64;
    let outcome = match rng.below(100) {
        0..=89 => Outcome::Success,
        90..=94 => Outcome::Partial,
        95..=97 => Outcome::Failed,
        98 => Outcome::Timeout,
        _ => Outcome::Skipped,
    };
    let processed = rng.below(1000) as i64;
    ExecutionReport {
        worker_name: format!("bench_worker_{worker:02}"),
        worker_type: ["analytics", "intel", "sse"][(worker % 3) as usize].into(),
        started_at: Some(runwarden::domain::validation::to_timestamp(now - TimeDelta::seconds(ago_s))),
        duration_ms: Some(duration),
        outcome: outcome as i32,
        data_verification: Some(DataVerification {
            records_fetched: processed + rng.below(20) as i64,
            records_processed: processed,
            records_stored: processed,
            records_failed: rng.below(5) as i64,
            validation_checks_passed: 5,
            validation_checks_failed: i64::from(rng.below(20) == 0),
            api_calls_made: 4,
            api_calls_succeeded: 4,
            api_rate_limited: rng.below(50) == 0,
            newest_record_age_seconds: Some(rng.unit() * 3600.0),
            ..Default::default()
        }),
        resource_metrics: Some(ResourceMetrics {
            memory_peak_mb: Some(100.0 + rng.unit() * 300.0),
            cpu_percent_avg: Some(rng.unit() * 90.0),
            database_query_count: rng.below(150) as i64,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Loads `rows` runs spread evenly over `days` for `workers` workers, oldest first, through the
/// writer's commit in batches of 1,000. Returns the load rate (reports/s).
async fn load(store: &Store, rows: u64, workers: u64, days: i64) -> f64 {
    let mut rng = Rng(42);
    let span_s = days * 86_400 - 120;
    let scoring = ScoringConfig::default();
    let started = Instant::now();
    let mut loaded = 0u64;
    let mut batch = Vec::with_capacity(1000);
    while loaded < rows {
        let n = (rows - loaded).min(1000);
        batch.clear();
        for i in 0..n {
            let index = loaded + i;
            let ago = span_s - (index as i128 * span_s as i128 / rows as i128) as i64;
            let report = synthetic_report(&mut rng, index % workers, ago.max(60));
            let now = Utc::now();
            match validate_report(Some(report), now) {
                Ok(valid) => batch.push((valid, now)),
                Err(v) => panic!("synthetic report is invalid: {v:?}"),
            }
        }
        if let Err(e) = write_batch(store, &scoring, &batch).await {
            panic!("load failed: {e}");
        }
        loaded += n;
        if loaded.is_multiple_of(200_000) {
            eprintln!("  loaded {loaded}/{rows} ({:.0}/s)", loaded as f64 / started.elapsed().as_secs_f64());
        }
    }
    rows as f64 / started.elapsed().as_secs_f64()
}

struct Latency {
    p50: Duration,
    p99: Duration,
}

async fn measure<F, Fut, T, E>(calls: usize, mut call: F) -> Latency
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Debug,
{
    // One warm-up call, then the measured ones.
    if let Err(e) = call().await {
        panic!("benchmark call failed: {e:?}");
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        if let Err(e) = call().await {
            panic!("benchmark call failed: {e:?}");
        }
        samples.push(started.elapsed());
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Latency { p50: at(0.5), p99: at(0.99) }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

async fn stats_bench(rows: u64, workers: u64, days: i64, calls: usize, database: Option<String>, no_load: bool) {
    let dir = tempfile_dir();
    let url = database.unwrap_or_else(|| format!("sqlite://{}/bench.db?mode=rwc", dir.display()));
    let store = Store::connect(&url, &StoreOptions::default()).await.expect("open database");
    store.migrate().await.expect("migrate");
    if !no_load {
        eprintln!(
            "loading {rows} executions ({workers} workers, {days} days) into {}",
            runwarden::server::redact(&url)
        );
        let rate = load(&store, rows, workers, days).await;
        println!("load: {rows} executions at {rate:.0} reports/s through the writer's commit");
    }
    let raw = store.reader().clone();

    let app = App::build(Config::new("127.0.0.1:0".parse().expect("addr"), url.clone())).await.expect("server");
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
    let client = QueryServiceClient::new(channel);
    let worker = "bench_worker_07".to_string();

    let stats = |window: StatsWindow| {
        let mut c = client.clone();
        let worker = worker.clone();
        move || {
            let mut c2 = c.clone();
            let request =
                GetWorkerStatsRequest { worker_name: worker.clone(), window: window as i32, ..Default::default() };
            c = c2.clone();
            async move { c2.get_worker_stats(request).await }
        }
    };
    let mut table = Vec::new();
    table.push(("GetWorkerStats(7d)", measure(calls, stats(StatsWindow::StatsWindow7d)).await));
    table.push(("GetWorkerStats(90d)", measure(calls, stats(StatsWindow::StatsWindow90d)).await));
    table.push((
        "GetDataQualitySummary(7d)",
        measure(calls, || {
            let mut c = client.clone();
            async move {
                c.get_data_quality_summary(GetDataQualitySummaryRequest {
                    window: StatsWindow::StatsWindow7d as i32,
                    ..Default::default()
                })
                .await
            }
        })
        .await,
    ));
    table.push((
        "ListWorkers",
        measure(calls, || {
            let mut c = client.clone();
            async move { c.list_workers(ListWorkersRequest::default()).await }
        })
        .await,
    ));
    table.push((
        "ListExecutions(latest 20)",
        measure(calls, || {
            let mut c = client.clone();
            let worker = worker.clone();
            async move {
                c.list_executions(ListExecutionsRequest { worker_name: worker, limit: 20, ..Default::default() }).await
            }
        })
        .await,
    ));

    // The same figures from raw executions, for comparison.
    let backend = raw.get_database_backend();
    let scan = |days: i64| {
        let raw = raw.clone();
        let since = to_micros(Utc::now() - TimeDelta::days(days));
        move || {
            let raw = raw.clone();
            async move {
                raw.query_one_raw(Statement::from_string(
                    backend,
                    format!(
                        "SELECT COUNT(*), SUM(CASE WHEN outcome = 1 THEN 1 ELSE 0 END), AVG(duration_ms), MAX(duration_ms), \
                         AVG(score_overall), AVG(score_data_quality), SUM(records_processed) FROM executions e \
                         JOIN workers w ON w.id = e.worker_id WHERE w.worker_name = 'bench_worker_07' AND e.started_at_us >= {since}"
                    ),
                ))
                .await
            }
        }
    };
    let raw_calls = calls.min(20);
    let raw_7d = measure(raw_calls, scan(7)).await;
    let raw_90d = measure(raw_calls, scan(90)).await;
    let dq_since = to_micros(Utc::now() - TimeDelta::days(7));
    let raw_dq = measure(raw_calls, || {
        let raw = raw.clone();
        async move {
            raw.query_all_raw(Statement::from_string(
                backend,
                format!(
                    "SELECT worker_id, COUNT(*), AVG(score_data_quality), SUM(records_failed) FROM executions \
                     WHERE started_at_us >= {dq_since} GROUP BY worker_id"
                ),
            ))
            .await
        }
    })
    .await;

    println!("\n| query ({rows} executions) | p50 ms | p99 ms | raw scan p50 ms | raw/rollup |");
    println!("|---|---|---|---|---|");
    for (name, latency) in &table {
        let raw = match *name {
            "GetWorkerStats(7d)" => Some(&raw_7d),
            "GetWorkerStats(90d)" => Some(&raw_90d),
            "GetDataQualitySummary(7d)" => Some(&raw_dq),
            _ => None,
        };
        match raw {
            Some(r) => println!(
                "| {name} | {} | {} | {} | {:.1}x |",
                ms(latency.p50),
                ms(latency.p99),
                ms(r.p50),
                r.p50.as_secs_f64() / latency.p50.as_secs_f64()
            ),
            None => println!("| {name} | {} | {} | — | — |", ms(latency.p50), ms(latency.p99)),
        }
    }
    let _ = stop.send(());
    let _ = server.await;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("runwarden-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A fresh database on the PostgreSQL server at `base`, for one measurement.
async fn fresh_postgres(base: &str) -> String {
    use sqlx::{Connection, Executor};
    let name = format!("rw_bench_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(base).await.expect("connect to PostgreSQL");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.expect("create database");
    let (prefix, query) = base.split_once('?').map_or((base, String::new()), |(p, q)| (p, format!("?{q}")));
    let root = prefix.rsplit_once('/').map_or(prefix, |(root, _)| root);
    format!("{root}/{name}{query}")
}

async fn ingest_bench(seconds: u64, postgres: Option<String>) {
    use ingest::{Run, ServerProcess, Shape, measure, raw_inserts};
    let d = Duration::from_secs(seconds);
    let me = std::env::current_exe().expect("current exe");
    let runwarden = me.with_file_name("runwarden");
    let runwarden = runwarden.to_str().expect("utf-8 path").to_owned();
    let mut runs: Vec<Run> = Vec::new();

    eprintln!("wire limit: bare tonic echo server");
    // The echo server stays up (idle) for the whole run: each ratio's baseline is measured right
    // before and right after what it is compared with, and the ratio taken against their mean, so
    // that the machine's drift over the minutes between (±20 % seen on shared 2-vCPU machines)
    // moves both sides alike.
    let echo = ServerProcess::start(me.to_str().expect("utf-8 path"), &["echo-server"]);
    runs.push(measure("tonic echo, unary, 256 in flight (wire limit)", &echo, Shape::Unary, 256, d).await);
    runs.push(measure("tonic echo, batch of 100, 16 in flight", &echo, Shape::Batch(100), 16, d).await);

    let mut backends = vec![("SQLite (synchronous=FULL)".to_owned(), None)];
    if let Some(base) = &postgres {
        backends.push(("PostgreSQL".to_owned(), Some(base.clone())));
    }
    let dir = tempfile_dir();
    let mut summary = Vec::new();
    for (label, pg) in backends {
        let url = match &pg {
            Some(base) => fresh_postgres(base).await,
            None => format!("sqlite://{}/ingest-{}.db?mode=rwc", dir.display(), uuid::Uuid::new_v4().simple()),
        };
        eprintln!("runwarden on {label}");
        let server = ServerProcess::start(
            &runwarden,
            &["--log-format", "json", "serve", "--listen", "127.0.0.1:0", "--database", &url],
        );
        for in_flight in [1, 16, 64] {
            let name = format!("runwarden {label}, unary, {in_flight} in flight");
            runs.push(measure(&name, &server, Shape::Unary, in_flight, d).await);
        }
        let wire = format!("tonic echo, unary, 256 in flight (wire limit, before and after {label} unary@256)");
        let before = measure(&wire, &echo, Shape::Unary, 256, d).await;
        // (The mean includes the 0.3 s warm-up at 16 in flight, whose commits are shorter: it errs
        // towards a faster cadence, so the limit below is not understated.)
        let commits_before = commit_totals(&server).await;
        let unary = measure(&format!("runwarden {label}, unary, 256 in flight"), &server, Shape::Unary, 256, d).await;
        let commit = mean_commit(commits_before, commit_totals(&server).await);
        let after = measure(&wire, &echo, Shape::Unary, 256, d).await;
        let (unary_256, echo_rate) = (unary.rate(), (before.rate() + after.rate()) / 2.0);
        runs.extend([before, unary, after]);
        // What the cadence of group commit alone allows: an echo answering in groups that each
        // take as long as runwarden's commits just took, spending no CPU on them.
        let cadence = match commit {
            Some(commit) => {
                let (us, ms) = (commit.as_micros().max(1).to_string(), commit.as_secs_f64() * 1e3);
                let grouped =
                    ServerProcess::start(me.to_str().expect("utf-8 path"), &["echo-server", "--commit-us", &us]);
                let name = format!(
                    "tonic echo, unary, 256 in flight, answered in groups of {ms:.2} ms (the mean commit of {label} unary@256; no storage)"
                );
                let run = measure(&name, &grouped, Shape::Unary, 256, d).await;
                grouped.stop();
                let rate = run.rate();
                runs.push(run);
                format!(
                    "; an echo answering in groups of {ms:.2} ms (that mean commit, no CPU) = {:.2} of the wire",
                    rate / echo_rate
                )
            }
            None => String::new(),
        };
        // The reference design on SQLite, built minimally (`minimal-server`): what a
        // durable server that does nothing else per report reaches on this machine.
        let minimal = pg.is_none().then(|| {
            let path = dir.join(format!("minimal-{}.db", uuid::Uuid::new_v4().simple()));
            let path = path.to_str().expect("utf-8 path").to_owned();
            ServerProcess::start(me.to_str().expect("utf-8 path"), &["minimal-server", "--database", &path])
        });
        let minimal_unary = match &minimal {
            Some(minimal) => {
                let name =
                    "minimal group-commit server (tonic + SQLite synchronous=FULL, nothing else), unary, 256 in flight";
                let run = measure(name, minimal, Shape::Unary, 256, d).await;
                let rate = run.rate();
                runs.push(run);
                Some(rate)
            }
            None => None,
        };

        // The storage limit at 1,000 rows per transaction (what the ratio targets are stated
        // against) before and after the bulk runs, and once at the writer's own largest
        // transaction, so that the ratio at equal transaction sizes is known too.
        let (pg, dir, label) = (&pg, &dir, &label);
        let raw = |per_transaction: u64| async move {
            let url = match pg {
                Some(base) => fresh_postgres(base).await,
                None => format!("sqlite://{}/raw-{}.db?mode=rwc", dir.display(), uuid::Uuid::new_v4().simple()),
            };
            let mut run = raw_inserts(&url, d, per_transaction, ingest::REPORT_WORKERS).await;
            run.name = format!("{label}: {}", run.name);
            run
        };
        let raw_before = raw(1000).await;
        let mut bulk = Vec::new();
        for (name, shape, in_flight) in [
            ("stream of 1,000, 4 streams", Shape::Stream(1000), 4),
            ("batch of 100, 16 in flight", Shape::Batch(100), 16),
            ("batch of 1,000, 4 in flight", Shape::Batch(1000), 4),
        ] {
            bulk.push(measure(&format!("runwarden {label}, {name}"), &server, shape, in_flight, d).await);
        }
        let rss = server.rss_mb();
        let peak = server.peak_rss_mb();
        server.stop();
        let mut minimal_bulk = Vec::new();
        if let Some(minimal) = minimal {
            for (name, shape, in_flight) in [
                ("stream of 1,000, 4 streams", Shape::Stream(1000), 4),
                ("batch of 1,000, 4 in flight", Shape::Batch(1000), 4),
            ] {
                let name = format!("minimal group-commit server (SQLite), {name}");
                minimal_bulk.push(measure(&name, &minimal, shape, in_flight, d).await);
            }
            minimal.stop();
        }
        let raw_after = raw(1000).await;
        let raw_largest = raw(runwarden::store::ingest::DEFAULT_MAX_BATCH as u64).await;
        // The same statements on a bare rusqlite connection (what the database allows without
        // sea-orm and the gate), and through sqlx's connection thread (the writer's old driver).
        let (raw_c_api, raw_sqlx) = match pg {
            Some(_) => (None, None),
            None => {
                let on = async |driver| {
                    let url = format!("sqlite://{}/raw-{}.db?mode=rwc", dir.display(), uuid::Uuid::new_v4().simple());
                    let mut run = ingest::raw_inserts_with(&url, d, 1000, ingest::REPORT_WORKERS, driver).await;
                    run.name = format!("{label}: {}", run.name);
                    run
                };
                (Some(on(ingest::Driver::SqliteCApi).await), Some(on(ingest::Driver::Sqlx).await))
            }
        };
        let raw_1000 = (raw_before.rate() + raw_after.rate()) / 2.0;
        let best_bulk = bulk.iter().map(Run::rate).fold(0.0, f64::max);
        let raw_largest_rate = raw_largest.rate();
        let minimal_best = minimal_bulk.iter().map(Run::rate).fold(0.0, f64::max);
        runs.push(raw_before);
        runs.extend(bulk);
        runs.extend(minimal_bulk);
        let c_api_rate = raw_c_api.as_ref().map(Run::rate);
        let sqlx_rate = raw_sqlx.as_ref().map(Run::rate);
        runs.extend([raw_after, raw_largest]);
        runs.extend(raw_c_api);
        runs.extend(raw_sqlx);
        let reference = match (minimal_unary, c_api_rate, sqlx_rate) {
            (Some(minimal_unary), Some(c_api_rate), Some(sqlx_rate)) => format!(
                "; the minimal group-commit server: unary@256 / wire = {:.2}, best stream-or-batch / storage = {:.2}, \
                 so runwarden reaches {:.2} and {:.2} of it; raw inserts on a bare rusqlite connection: \
                 {c_api_rate:.0}/s = {:.2} of raw inserts through the server's ingest connection, and runwarden's \
                 best stream-or-batch = {:.2} of them; raw inserts through sqlx: {sqlx_rate:.0}/s = {:.2} of the \
                 server's ingest connection",
                minimal_unary / echo_rate,
                minimal_best / raw_1000,
                unary_256 / minimal_unary,
                best_bulk / minimal_best,
                c_api_rate / raw_1000,
                best_bulk / c_api_rate,
                sqlx_rate / raw_1000,
            ),
            _ => String::new(),
        };
        summary.push(format!(
            "{label}: unary@256 / wire = {:.2} (echo {echo_rate:.0}/s, the mean of the runs before and after{cadence}); \
             best stream-or-batch / storage = {:.2} (raw inserts {raw_1000:.0}/s, the mean of the runs before and \
             after; at {} per transaction: {:.2}); server RSS now {rss:.0} MB, peak {peak:.0} MB{reference}",
            unary_256 / echo_rate,
            best_bulk / raw_1000,
            runwarden::store::ingest::DEFAULT_MAX_BATCH,
            best_bulk / raw_largest_rate,
        ));
    }
    echo.stop();
    let _ = std::fs::remove_dir_all(&dir);

    println!("\n| configuration | reports/s | p50 ms | p99 ms | p999 ms | server CPU (cores) | server peak RSS MB |");
    println!("|---|---|---|---|---|---|---|");
    for run in &runs {
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {} |",
            run.name,
            run.rate(),
            ms(run.quantile(0.5)),
            ms(run.quantile(0.99)),
            ms(run.quantile(0.999)),
            run.server_cpu.map_or("—".into(), |c| format!("{c:.2}")),
            run.peak_rss_mb.map_or("—".into(), |m| format!("{m:.0}")),
        );
    }
    println!("\nlatency is per call (a batch or stream call carries many reports)");
    for line in summary {
        println!("{line}");
    }
}

/// The server's commit histogram so far: (commits, seconds), from `/metrics`.
async fn commit_totals(server: &ingest::ServerProcess) -> Option<(f64, f64)> {
    let count = server.metric("runwarden_ingest_commit_seconds_count").await?;
    let sum = server.metric("runwarden_ingest_commit_seconds_sum").await?;
    Some((count, sum))
}

/// The mean commit between two [`commit_totals`], if there was one.
fn mean_commit(before: Option<(f64, f64)>, after: Option<(f64, f64)>) -> Option<Duration> {
    let ((count_0, sum_0), (count_1, sum_1)) = (before.unwrap_or((0.0, 0.0)), after?);
    let commits = count_1 - count_0;
    (commits >= 1.0).then(|| Duration::from_secs_f64(((sum_1 - sum_0) / commits).max(0.0)))
}

/// Parses `--fraction`: a number above 0 and at most 1.
fn fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value > 0.0 && value <= 1.0 => Ok(value),
        Ok(value) => Err(format!("{value} is not above 0 and at most 1")),
        Err(e) => Err(format!("not a number: {e}")),
    }
}

fn runwarden_binary() -> String {
    let me = std::env::current_exe().expect("current exe");
    me.with_file_name("runwarden").to_str().expect("utf-8 path").to_owned()
}

/// Ingest into a database already holding `rows` executions against ingest into an empty one.
///
/// The two are measured in alternating rounds, each empty round on a fresh database, so that the
/// machine's drift (this kind of machine moves by a third within an hour) falls on both sides
/// alike; comparing against a measurement taken before the ten-minute load, as this bench first
/// did, compared the machine with itself ten minutes earlier as much as the table sizes. Server
/// CPU per report is printed beside the rate: it moves less with the machine than the rate does.
async fn ingest_at_scale(rows: u64, seconds: u64, rounds: usize) {
    use ingest::{ServerProcess, Shape, measure};
    let d = Duration::from_secs(seconds);
    let dir = tempfile_dir();
    let url = format!("sqlite://{}/scale.db?mode=rwc", dir.display());
    let runwarden = runwarden_binary();
    let serve = |url: &str| {
        ServerProcess::start(
            &runwarden,
            &["--log-format", "json", "serve", "--listen", "127.0.0.1:0", "--database", url],
        )
    };
    let configs = [("unary, 256 in flight", Shape::Unary, 256), ("batch of 100, 16 in flight", Shape::Batch(100), 16)];

    let store = Store::connect(&url, &StoreOptions::default()).await.expect("open");
    store.migrate().await.expect("migrate");
    eprintln!("loading {rows} executions");
    // 25 days: inside the default 30-day retention, so the server measured next is not busy
    // deleting the older part of the history while it ingests (which halved unary ingest).
    let rate = load(&store, rows, 50, 25).await;
    store.close().await;
    println!("loaded {rows} executions at {rate:.0}/s");
    let full = serve(&url);
    // The load leaves the state changes of its anomalies in the alert outbox, as ingest at this
    // rate would; the server fans them out in the background. Measure once it has caught up.
    let started = std::time::Instant::now();
    let backlog = unfanned_alerts(&url).await;
    let mut left = backlog;
    while left > 0 && started.elapsed() < Duration::from_secs(1800) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        left = unfanned_alerts(&url).await;
    }
    println!(
        "alert outbox: {backlog} state changes fanned out in {:.1} s ({left} left)",
        started.elapsed().as_secs_f64()
    );
    // What the loaded server costs doing nothing, next to a server on an empty database.
    let idle = Duration::from_secs(10);
    let idle_cpu = async |server: &ServerProcess| {
        // Past what a start does once (the first retention pass, say).
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before = server.cpu_seconds();
        tokio::time::sleep(idle).await;
        (server.cpu_seconds() - before) / idle.as_secs_f64()
    };
    let full_idle = idle_cpu(&full).await;
    let empty_idle = {
        let empty = serve(&format!("sqlite://{}/idle.db?mode=rwc", dir.display()));
        let cpu = idle_cpu(&empty).await;
        empty.stop();
        cpu
    };
    println!("idle server CPU: {full_idle:.3} cores with {rows} rows, {empty_idle:.3} cores on an empty database");

    // (rate, server CPU µs per report) per config and side, one entry per round.
    let mut empty_runs = vec![Vec::new(); configs.len()];
    let mut full_runs = vec![Vec::new(); configs.len()];
    let per_report = |run: &ingest::Run| {
        (run.rate(), run.server_cpu.unwrap_or(0.0) * run.elapsed.as_secs_f64() * 1e6 / run.reports.max(1) as f64)
    };
    for round in 0..rounds {
        for (c, (name, shape, in_flight)) in configs.iter().enumerate() {
            // Alternate which side goes first, so a trend within a round cancels out.
            for full_side in if round % 2 == 0 { [false, true] } else { [true, false] } {
                let run = if full_side {
                    measure(name, &full, *shape, *in_flight, d).await
                } else {
                    let empty = serve(&format!("sqlite://{}/empty-{round}-{c}.db?mode=rwc", dir.display()));
                    let run = measure(name, &empty, *shape, *in_flight, d).await;
                    empty.stop();
                    run
                };
                let (rate, cpu_us) = per_report(&run);
                eprintln!(
                    "round {round}: {name}, {}: {rate:.0}/s, {cpu_us:.0} µs CPU per report",
                    if full_side { "full" } else { "empty" }
                );
                let side = if full_side { &mut full_runs } else { &mut empty_runs };
                side[c].push((rate, cpu_us));
            }
        }
    }
    full.stop();
    let _ = std::fs::remove_dir_all(&dir);

    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    };
    // Two ratios: of the medians, and the median of each round's own ratio. The machine's speed
    // drifts over the minutes of a run (±20 % seen on shared 2-vCPU machines); the two sides of a
    // round are measured back to back, so the second is the one such drift moves least.
    println!(
        "\n| SQLite ingest ({rounds} alternating rounds, medians) | empty table, reports/s | {rows} rows already, reports/s | ratio of the medians | median of the rounds' ratios | server CPU µs/report, empty → full |"
    );
    println!("|---|---|---|---|---|---|");
    for (c, (name, _, _)) in configs.iter().enumerate() {
        let mut per_round: Vec<f64> =
            empty_runs[c].iter().zip(&full_runs[c]).map(|((empty, _), (full, _))| full / empty).collect();
        let (mut empty_rates, mut empty_cpu): (Vec<f64>, Vec<f64>) = empty_runs[c].iter().copied().unzip();
        let (mut full_rates, mut full_cpu): (Vec<f64>, Vec<f64>) = full_runs[c].iter().copied().unzip();
        let (empty, full) = (median(&mut empty_rates), median(&mut full_rates));
        println!(
            "| {name} | {empty:.0} | {full:.0} | {:.2} | {:.2} | {:.0} → {:.0} |",
            full / empty,
            median(&mut per_round),
            median(&mut empty_cpu),
            median(&mut full_cpu)
        );
    }
}

/// Alert outbox rows not yet fanned out, read through a read-only connection of its own.
async fn unfanned_alerts(url: &str) -> i64 {
    use sqlx::{ConnectOptions, Connection, sqlite::SqliteConnectOptions};
    let options: SqliteConnectOptions = url.parse().expect("sqlite url");
    let mut connection = options.read_only(true).connect().await.expect("read-only connection");
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM alert_outbox WHERE fanned_out = 0")
        .fetch_one(&mut connection)
        .await
        .expect("count the alert outbox");
    let _ = connection.close().await;
    count
}

/// The same allocator as the server, so the raw-insert baseline runs under the same conditions.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    ingest::TIME_ORDERED_IDS.store(cli.ids == Ids::V7, std::sync::atomic::Ordering::Relaxed);
    match cli.command {
        Bench::Stats { rows, workers, days, calls, database, no_load } => {
            stats_bench(rows, workers, days, calls, database, no_load).await;
        }
        Bench::Ingest { quick, seconds, postgres } => {
            ingest_bench(seconds.unwrap_or(if quick { 2 } else { 10 }), postgres).await;
        }
        Bench::EchoServer { listen, commit_us } => {
            ingest::serve_echo(listen, commit_us.map(Duration::from_micros)).await;
        }
        Bench::MinimalServer { listen, database } => minimal::serve(listen, &database).await,
        Bench::Raw { per_transaction, seconds, database, workers, c_api, sqlx } => {
            let dir = tempfile_dir();
            let url = database.unwrap_or_else(|| format!("sqlite://{}/raw.db?mode=rwc", dir.display()));
            if c_api && !url.starts_with("sqlite:") {
                eprintln!("--c-api is for SQLite databases only");
                std::process::exit(2);
            }
            let driver = match (c_api, sqlx) {
                (true, _) => ingest::Driver::SqliteCApi,
                (_, true) => ingest::Driver::Sqlx,
                _ => ingest::Driver::Server,
            };
            let run =
                ingest::raw_inserts_with(&url, Duration::from_secs(seconds), per_transaction, workers, driver).await;
            println!("{} rows in {:.1} s: {:.0}/s", run.reports, run.elapsed.as_secs_f64(), run.rate());
            let _ = std::fs::remove_dir_all(&dir);
        }
        Bench::Load { addr, shape, in_flight, seconds, server_pid, rss_every } => {
            let Some(shape) = ingest::Shape::parse(&shape) else {
                eprintln!("--shape must be unary, stream:N or batch:N, not {shape:?}");
                std::process::exit(2);
            };
            let rss_every = rss_every.map(Duration::from_secs);
            ingest::load(&addr, shape, in_flight, Duration::from_secs(seconds), server_pid, rss_every).await;
        }
        Bench::IngestAtScale { rows, seconds, rounds } => ingest_at_scale(rows, seconds, rounds.max(1)).await,
        Bench::Soak { seconds, slice, fraction, check } => {
            if !soak::run(&runwarden_binary(), seconds, slice, fraction, check).await {
                std::process::exit(1);
            }
        }
        Bench::Overload { in_flight, connections, seconds, generator, nice_generator, admission_wait_ms } => {
            let generator = if nice_generator { overload::Generator::Nice } else { generator };
            overload::run(&runwarden_binary(), in_flight, connections, seconds, generator, admission_wait_ms).await;
        }
        Bench::Guardian { streams, heartbeats, batch, rounds, seconds, tick_seconds, flush_seconds } => {
            guardian::run(streams, heartbeats, batch, rounds, seconds, tick_seconds, flush_seconds).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{fraction, mean_commit};

    #[test]
    fn the_mean_commit_is_taken_over_the_commits_between_two_readings() {
        let mean = mean_commit(Some((10.0, 0.5)), Some((30.0, 0.58))).map(|d| d.as_secs_f64());
        assert!(mean.is_some_and(|s| (s - 0.004).abs() < 1e-9), "{mean:?}");
        assert_eq!(mean_commit(None, Some((4.0, 0.02))), Some(Duration::from_millis(5)));
        assert_eq!(mean_commit(Some((7.0, 0.1)), Some((7.0, 0.1))), None);
        assert_eq!(mean_commit(Some((7.0, 0.1)), None), None);
    }

    #[test]
    fn a_soak_fraction_is_above_zero_and_at_most_one() {
        assert_eq!(fraction("0.25"), Ok(0.25));
        assert_eq!(fraction("1"), Ok(1.0));
        for bad in ["0", "-0.5", "1.5", "NaN", "half"] {
            assert!(fraction(bad).is_err(), "{bad} accepted");
        }
    }
}
