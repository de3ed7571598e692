//! `runwarden-bench ingest`: report ingest against its two limits, measured in one run on the
//! same machine and message — the wire (a bare tonic echo server) and the storage (raw inserts of
//! the same rows, no server, through the server's driver and, on SQLite, through SQLite's C API) —
//! with runwarden in between, as a child process so that its CPU and peak RSS are its own, and on
//! SQLite beside the issue's reference design built minimally (`minimal.rs`).

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;
use prost::Message;
use runwarden::proto::v1::{
    DataVerification, ExecutionReport, Outcome, ResourceMetrics, SubmitReportBatchRequest, SubmitReportRequest,
    SubmitReportResponse, SubmitReportsResponse,
    report_service_client::ReportServiceClient,
    report_service_server::{ReportService, ReportServiceServer},
};
use tokio::sync::Mutex;
use tonic::{Request, Response, Status, transport::Channel};

/// One ~500-byte report, as a typical worker sends it; each call gets a fresh execution_id.
/// When set, reports carry time-ordered UUIDv7 execution ids (what the Python client sends)
/// instead of random UUIDv4 ones (the default: the worst case for the server's unique index).
pub static TIME_ORDERED_IDS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn sample_report(i: u64) -> ExecutionReport {
    ExecutionReport {
        worker_name: worker_name(i % REPORT_WORKERS),
        execution_id: fresh_execution_id(),
        worker_type: "analytics".into(),
        duration_ms: Some(1200 + (i % 300) as i64),
        outcome: Outcome::Success as i32,
        error_message: String::new(),
        data_verification: Some(DataVerification {
            records_fetched: 200,
            records_processed: 195,
            records_stored: 195,
            records_failed: 5,
            newest_record_age_seconds: Some(42.0),
            oldest_record_age_seconds: Some(3600.0),
            expected_fields_present: Some(true),
            validation_checks_passed: 12,
            validation_checks_failed: 0,
            validation_errors: vec!["row 17: price is negative".into()],
            api_calls_made: 4,
            api_calls_succeeded: 4,
            api_quota_remaining: Some(9000),
            cache_hits: 30,
            cache_misses: 4,
            cache_writes: 4,
            missing_fields: vec!["thumbnail_url".into()],
            ..Default::default()
        }),
        resource_metrics: Some(ResourceMetrics {
            memory_peak_mb: Some(128.0),
            cpu_percent_avg: Some(35.0),
            network_bytes_received: 1_048_576,
            database_query_count: 24,
            redis_operations: 12,
        }),
        custom_metrics: serde_json::from_str(
            r#"{"categories_fetched":["gaming","music","entertainment"],"quota_used_today":192}"#,
        )
        .ok(),
        ..Default::default()
    }
}

/// The name of the benchmark's `w`-th worker.
fn worker_name(w: u64) -> String {
    format!("ingest_worker_{w:02}")
}

/// A new execution id, random or time-ordered as [`TIME_ORDERED_IDS`] says.
fn fresh_execution_id() -> String {
    let id = if TIME_ORDERED_IDS.load(std::sync::atomic::Ordering::Relaxed) {
        uuid::Uuid::now_v7()
    } else {
        uuid::Uuid::new_v4()
    };
    id.to_string()
}

/// The wire limit: a tonic ReportService that stores nothing. With a [`GroupCommit`] it answers
/// unary calls in groups, as a group-commit writer does, still storing nothing.
pub struct EchoService {
    group: Option<GroupCommit>,
}

#[tonic::async_trait]
impl ReportService for EchoService {
    async fn submit_report(
        &self,
        request: Request<SubmitReportRequest>,
    ) -> Result<Response<SubmitReportResponse>, Status> {
        let id = request.into_inner().report.map(|r| r.execution_id).unwrap_or_default();
        if let Some(group) = &self.group {
            group.wait().await;
        }
        Ok(Response::new(SubmitReportResponse { execution_id: id, ..Default::default() }))
    }

    async fn submit_reports(
        &self,
        request: Request<tonic::Streaming<SubmitReportRequest>>,
    ) -> Result<Response<SubmitReportsResponse>, Status> {
        let mut stream = request.into_inner();
        let mut accepted = 0;
        while stream.message().await?.is_some() {
            accepted += 1;
        }
        Ok(Response::new(SubmitReportsResponse { accepted, ..Default::default() }))
    }

    async fn submit_report_batch(
        &self,
        request: Request<SubmitReportBatchRequest>,
    ) -> Result<Response<SubmitReportsResponse>, Status> {
        let accepted = request.into_inner().reports.len() as i64;
        Ok(Response::new(SubmitReportsResponse { accepted, ..Default::default() }))
    }
}

/// The cadence of a group-commit writer without its work: one thread takes every call waiting,
/// "commits" them by sleeping for the commit time (no CPU spent), answers them all, and takes the
/// calls that arrived meanwhile as the next group. A call therefore waits for the commit in
/// progress and then for its own, as a report does at runwarden's writer; with runwarden's
/// measured commit time, the echo's unary rate is the limit that cadence alone sets at a given
/// number of calls in flight, before any CPU goes to storage.
pub struct GroupCommit {
    calls: std::sync::mpsc::Sender<tokio::sync::oneshot::Sender<()>>,
}

impl GroupCommit {
    pub fn spawn(commit: Duration) -> GroupCommit {
        let (calls, waiting) = std::sync::mpsc::channel::<tokio::sync::oneshot::Sender<()>>();
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || {
                while let Ok(first) = waiting.recv() {
                    let group: Vec<_> = std::iter::once(first).chain(waiting.try_iter()).collect();
                    std::thread::sleep(commit);
                    for call in group {
                        let _ = call.send(());
                    }
                }
            })
            .expect("spawn the group-commit thread");
        GroupCommit { calls }
    }

    /// Returns once a group holding this call has "committed".
    pub async fn wait(&self) {
        let (answer, answered) = tokio::sync::oneshot::channel();
        if self.calls.send(answer).is_ok() {
            let _ = answered.await;
        }
    }
}

/// Serves the echo service on `listen` and prints `addr=HOST:PORT` once bound; with `commit`,
/// unary calls are answered in groups that each take that long ([`GroupCommit`]).
pub async fn serve_echo(listen: std::net::SocketAddr, commit: Option<Duration>) {
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
    println!("addr={}", listener.local_addr().expect("addr"));
    let service = EchoService { group: commit.map(GroupCommit::spawn) };
    tonic::transport::Server::builder()
        .add_service(ReportServiceServer::new(service).max_decoding_message_size(64 << 20))
        .serve_with_incoming(incoming(listener))
        .await
        .expect("echo server");
}

/// `listener`'s connections with `TCP_NODELAY` set, as tonic's own `serve` sets it by default and
/// as runwarden sets it. (`serve_with_incoming` ignores the builder's `tcp_nodelay`: until the
/// twenty-eighth session the echo server answered with Nagle's algorithm on, and its p99 was
/// 45–52 ms in most runs, the delayed-ACK timer.)
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// A server in a child process, with its address, CPU time and peak memory readable from /proc.
pub struct ServerProcess {
    child: Child,
    pub addr: String,
}

impl ServerProcess {
    /// Starts `program args…` and waits for the line naming its address (`addr=…` or a JSON log
    /// line with an "addr" field). Later lines at WARN or ERROR are copied to stderr, so a failed
    /// measurement shows the server's reason.
    pub fn start(program: &str, args: &[&str]) -> ServerProcess {
        let mut child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "warn,runwarden=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sent {
                    if line.contains(r#""level":"WARN""#) || line.contains(r#""level":"ERROR""#) {
                        eprintln!("server: {line}");
                    }
                    continue;
                }
                let addr = if let Some(addr) = line.strip_prefix("addr=") {
                    Some(addr.to_owned())
                } else if line.contains("runwarden ready") {
                    serde_json::from_str::<serde_json::Value>(&line)
                        .ok()
                        .and_then(|v| v["addr"].as_str().map(str::to_owned))
                } else {
                    None
                };
                if let Some(addr) = addr {
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(60)).expect("server reports its address");
        ServerProcess { child, addr }
    }

    /// User + system CPU seconds used so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.child.id())
    }

    /// Peak resident memory (VmHWM) in MB.
    pub fn peak_rss_mb(&self) -> f64 {
        memory_mb(self.child.id(), "VmHWM")
    }

    /// Current resident memory (VmRSS) in MB.
    pub fn rss_mb(&self) -> f64 {
        memory_mb(self.child.id(), "VmRSS")
    }

    /// The value of the sample `name` (a full series name, `runwarden_ingest_commit_seconds_sum`
    /// say) on the server's `/metrics`, if it has one.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        metric_value(&http_get(&self.addr, "/metrics").await?, name)
    }

    pub fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// A bench that panics (a failed call, say) does not leave its server running on the database.
impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The result of one configuration.
pub struct Run {
    pub name: String,
    pub reports: u64,
    pub elapsed: Duration,
    /// Per call (a call carries `reports_per_call` reports).
    pub latencies: Vec<Duration>,
    pub server_cpu: Option<f64>,
    pub peak_rss_mb: Option<f64>,
}

impl Run {
    pub fn rate(&self) -> f64 {
        self.reports as f64 / self.elapsed.as_secs_f64()
    }

    pub fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        sorted[((sorted.len() - 1) as f64 * q).round() as usize]
    }
}

/// How calls carry reports.
#[derive(Clone, Copy)]
pub enum Shape {
    /// SubmitReport, one report per call.
    Unary,
    /// SubmitReportBatch with this many reports.
    Batch(usize),
    /// SubmitReports, streams of this many reports.
    Stream(usize),
}

impl Shape {
    /// `unary`, `stream:N` or `batch:N`.
    pub fn parse(text: &str) -> Option<Shape> {
        let count = |n: &str| n.parse::<usize>().ok().filter(|&n| n > 0);
        match text.split_once(':') {
            None if text == "unary" => Some(Shape::Unary),
            Some(("stream", n)) => count(n).map(Shape::Stream),
            Some(("batch", n)) => count(n).map(Shape::Batch),
            _ => None,
        }
    }
}

/// CPU seconds (user and system) process `pid` has used, from `/proc/PID/stat`; 0 if unreadable.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat_cpu(&stat).map_or(0.0, |(_, ticks)| ticks as f64 / TICKS_PER_SECOND)
}

/// `/proc`'s clock ticks per second (`getconf CLK_TCK`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// The command name and the user + system CPU ticks of a `/proc/.../stat` line.
fn stat_cpu(stat: &str) -> Option<(&str, u64)> {
    // The command name is in parentheses and may itself contain spaces or ')'; utime and stime
    // are the 12th and 13th fields after it.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    Some((stat.get(open + 1..close)?, ticks(11) + ticks(12)))
}

/// A memory figure of process `pid` from `/proc/PID/status` (`VmRSS`, `VmHWM`), in MB; 0 if
/// unreadable.
pub fn memory_mb(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// What the threads of one name have used so far: CPU ticks, and nanoseconds spent runnable but
/// waiting for a CPU (the second field of `/proc/PID/task/TID/schedstat`; 0 where the kernel
/// keeps no schedstat).
#[derive(Clone, Copy, Default)]
struct ThreadUse {
    ticks: u64,
    waited_ns: u64,
}

/// The runqueue wait in a `schedstat` line: "on-CPU ns, waiting-to-run ns, timeslices".
fn schedstat_wait_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().nth(1)?.parse().ok()
}

/// What each thread of process `pid` has used so far, summed by thread name (tokio's workers
/// share one name, as do sqlx's SQLite connection threads).
fn thread_use(pid: u32) -> BTreeMap<String, ThreadUse> {
    let mut by_name = BTreeMap::<String, ThreadUse>::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return by_name };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let Some((name, ticks)) = stat_cpu(&stat) else { continue };
        let waited_ns = std::fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|line| schedstat_wait_ns(&line))
            .unwrap_or(0);
        let used = by_name.entry(name.to_owned()).or_default();
        used.ticks += ticks;
        used.waited_ns += waited_ns;
    }
    by_name
}

/// `runwarden-bench load`: drives the server at `addr` and prints what it got, with the CPU this
/// load generator spent per report and, given the server's pid, the server's — in all and by
/// thread name, with the time each thread name spent runnable but waiting for a CPU — and, every
/// `rss_every`, the server's resident memory.
pub async fn load(
    addr: &str,
    shape: Shape,
    in_flight: usize,
    duration: Duration,
    server_pid: Option<u32>,
    rss_every: Option<Duration>,
) {
    let channel = Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
    let client =
        ReportServiceClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20);
    let cpu = || (cpu_seconds(std::process::id()), server_pid.map(cpu_seconds));
    let (run_ended, ended) = tokio::sync::oneshot::channel();
    let sampler = server_pid.zip(rss_every).map(|(pid, every)| tokio::spawn(sample_rss(pid, every, ended)));
    let threads_before = server_pid.map(thread_use);
    let before = cpu();
    let (reports, elapsed, latencies) = drive(client, shape, in_flight, duration).await;
    let after = cpu();
    let threads_after = server_pid.map(thread_use);
    let _ = run_ended.send(());
    let run = Run { name: "load".into(), reports, elapsed, latencies, server_cpu: None, peak_rss_mb: None };
    let per_report = |seconds: f64| seconds * 1e6 / reports.max(1) as f64;
    let server = match (before.1, after.1) {
        (Some(b), Some(a)) => format!(", server CPU {:.1} µs/report", per_report(a - b)),
        _ => String::new(),
    };
    println!(
        "{reports} reports in {:.1} s: {:.0}/s, call p50 {} ms, p99 {} ms; client CPU {:.1} µs/report{server}",
        elapsed.as_secs_f64(),
        run.rate(),
        super::ms(run.quantile(0.5)),
        super::ms(run.quantile(0.99)),
        per_report(after.0 - before.0),
    );
    if let (Some(before), Some(after)) = (threads_before, threads_after) {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let mut used: Vec<(String, ThreadUse)> = after
            .into_iter()
            .map(|(name, used)| {
                let was = before.get(&name).copied().unwrap_or_default();
                let spent = ThreadUse {
                    ticks: used.ticks.saturating_sub(was.ticks),
                    waited_ns: used.waited_ns.saturating_sub(was.waited_ns),
                };
                (name, spent)
            })
            .filter(|(_, spent)| spent.ticks > 0)
            .collect();
        used.sort_by(|a, b| b.1.ticks.cmp(&a.1.ticks).then_with(|| a.0.cmp(&b.0)));
        for (name, spent) in used {
            let cpu = spent.ticks as f64 / TICKS_PER_SECOND;
            let waited = spent.waited_ns as f64 / 1e9;
            println!(
                "  server thread {name:<16} {:.3} cores, {:.1} µs/report; waiting to run {:.3} cores, {:.1} µs/report",
                cpu / seconds,
                per_report(cpu),
                waited / seconds,
                per_report(waited),
            );
        }
    }
    if let (Some(sampler), Some(pid)) = (sampler, server_pid) {
        let samples = sampler.await.unwrap_or_default();
        let largest = samples.iter().map(|(_, mb)| *mb).fold(0.0, f64::max);
        if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
            println!(
                "server RSS: {:.1} MB at {:.0} s, {:.1} MB at {:.0} s, largest sample {largest:.1} MB, peak (VmHWM) {:.1} MB",
                first.1,
                first.0,
                last.1,
                last.0,
                memory_mb(pid, "VmHWM"),
            );
        }
    }
}

/// Samples the resident memory of process `pid` every `every` until `done` fires (the run's end),
/// and once more then, printing each sample as it is taken; returns (seconds since the start, MB).
async fn sample_rss(pid: u32, every: Duration, mut done: tokio::sync::oneshot::Receiver<()>) -> Vec<(f64, f64)> {
    let started = Instant::now();
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut samples = Vec::new();
    loop {
        let end = tokio::select! {
            _ = ticks.tick() => false,
            _ = &mut done => true,
        };
        let at = started.elapsed().as_secs_f64();
        let mb = memory_mb(pid, "VmRSS");
        println!("  {at:>6.0} s: server RSS {mb:.1} MB{}", if end { " (end of the run)" } else { "" });
        samples.push((at, mb));
        if end {
            return samples;
        }
    }
}

/// The answer to `GET path` on `addr`, headers included: plain HTTP/1.0, as the bench has no HTTP
/// client dependency.
pub async fn http_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await.ok()?;
    Some(body)
}

/// The value of the unlabelled sample `name` in a Prometheus text exposition.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Drives `client` for `duration` with `in_flight` concurrent callers.
pub async fn drive(
    client: ReportServiceClient<Channel>,
    shape: Shape,
    in_flight: usize,
    duration: Duration,
) -> (u64, Duration, Vec<Duration>) {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for task in 0..in_flight {
        let mut client = client.clone();
        let latencies = latencies.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u64;
            let mut local = Vec::new();
            let mut i = task as u64 * 1_000_000_000;
            while Instant::now() < deadline {
                let call = Instant::now();
                let n = match shape {
                    Shape::Unary => {
                        i += 1;
                        let r = client.submit_report(SubmitReportRequest { report: Some(sample_report(i)) }).await;
                        r.map(|_| 1)
                    }
                    Shape::Batch(n) => {
                        let reports: Vec<_> = (0..n as u64).map(|k| sample_report(i + k)).collect();
                        i += n as u64;
                        client
                            .submit_report_batch(SubmitReportBatchRequest { reports })
                            .await
                            .map(|r| r.into_inner().accepted as u64)
                    }
                    Shape::Stream(n) => {
                        let messages: Vec<_> =
                            (0..n as u64).map(|k| SubmitReportRequest { report: Some(sample_report(i + k)) }).collect();
                        i += n as u64;
                        client
                            .submit_reports(futures::stream::iter(messages))
                            .await
                            .map(|r| r.into_inner().accepted as u64)
                    }
                };
                match n {
                    Ok(n) => {
                        sent += n;
                        local.push(call.elapsed());
                    }
                    Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(status) => panic!("ingest call failed: {status:?}"),
                }
            }
            latencies.lock().await.extend(local);
            sent
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("load task");
    }
    let elapsed = started.elapsed();
    let latencies = std::mem::take(&mut *latencies.lock().await);
    (total, elapsed, latencies)
}

/// Measures one configuration against `server`.
pub async fn measure(name: &str, server: &ServerProcess, shape: Shape, in_flight: usize, duration: Duration) -> Run {
    let channel =
        Channel::from_shared(format!("http://{}", server.addr)).expect("uri").connect().await.expect("connect");
    let client =
        ReportServiceClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20);
    // Warm up (connections, SQLite pages, allocator) before measuring.
    let _ = drive(client.clone(), shape, in_flight.min(16), Duration::from_millis(300)).await;
    let cpu_before = server.cpu_seconds();
    let (reports, elapsed, latencies) = drive(client, shape, in_flight, duration).await;
    let cpu = (server.cpu_seconds() - cpu_before) / elapsed.as_secs_f64();
    Run {
        name: name.to_owned(),
        reports,
        elapsed,
        latencies,
        server_cpu: Some(cpu),
        peak_rss_mb: Some(server.peak_rss_mb()),
    }
}

/// Workers the server's rows are spread over: as many as [`sample_report`] names, in turn.
pub const REPORT_WORKERS: u64 = 20;

/// The storage limit: the same rows inserted straight into the executions table (no server, no
/// scoring, no rollups), `per_transaction` per transaction, for `duration`. The rows go in through
/// the statements the writer itself uses ([`insert_statements`]: every value bound, in statements
/// of a few fixed shapes that each connection prepares once), so the limit is what storing
/// runwarden's rows costs, not what parsing SQL costs. They are the server's rows: spread over
/// `workers` workers in turn (the ingest benchmark's reports name [`REPORT_WORKERS`]), each
/// carrying the report and analysis the server stores for the sample report.
/// How [`raw_inserts`] hands its statements to the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// The way the server's ingest writer does: on a SQLite file, sea-orm statements on the
    /// store's own connection through SQLite's C API (`runwarden::store::c_api`), taking turns
    /// with sqlx's writer; otherwise (PostgreSQL) sea-orm over sqlx.
    Server,
    /// sea-orm over sqlx's writer connection (on SQLite, a connection thread that each statement
    /// is handed to and answered from): the server's ingest writer before it had its own
    /// connection, and every other writer still.
    Sqlx,
    /// SQLite only: the same statements through SQLite's C API (rusqlite) on the loop's own
    /// thread, on a connection opened with the writer's settings. What the database itself
    /// allows, without the driver's hand-offs and value conversions.
    SqliteCApi,
}

pub async fn raw_inserts(url: &str, duration: Duration, per_transaction: u64, workers: u64) -> Run {
    raw_inserts_with(url, duration, per_transaction, workers, Driver::Server).await
}

pub async fn raw_inserts_with(
    url: &str,
    duration: Duration,
    per_transaction: u64,
    workers: u64,
    driver: Driver,
) -> Run {
    use runwarden::store::{
        Store, StoreOptions,
        executions::{ExecutionRow, insert_statements},
        to_micros,
    };
    use sea_orm::{ConnectionTrait, Statement};
    assert!(per_transaction > 0, "rows per transaction must be at least 1");
    assert!(workers > 0, "rows need at least one worker");
    let store = Store::connect(url, &StoreOptions::default()).await.expect("open");
    store.migrate().await.expect("migrate");
    let backend = store.backend();
    // With the workers the server's rows name, their index entries land where the server's do.
    let names: Vec<String> = (0..workers).map(worker_name).collect();
    {
        let txn = store.begin_write().await.expect("begin");
        for name in &names {
            txn.execute_raw(Statement::from_string(
                backend,
                format!(
                    "INSERT INTO workers (worker_name, worker_type, first_seen_us, last_seen_us, last_outcome, run_count) \
                     VALUES ('{name}', 'analytics', 0, 0, 1, 0)"
                ),
            ))
            .await
            .expect("worker");
        }
        txn.commit().await.expect("commit");
    }
    let mut worker_ids = Vec::with_capacity(names.len());
    for name in &names {
        let id: i64 = store
            .reader()
            .query_one_raw(Statement::from_string(
                backend,
                format!("SELECT id FROM workers WHERE worker_name = '{name}'"),
            ))
            .await
            .expect("select")
            .and_then(|row| row.try_get_by_index(0).ok())
            .expect("worker id");
        worker_ids.push(id);
    }
    // Each worker's stored report and analysis, as the server stores them for the sample report
    // (validated, scored on an empty history), made before the clock starts: the loop below
    // copies them into its rows, so it times storing rows, not making reports.
    let made = Utc::now();
    let scoring = runwarden::domain::scoring::ScoringConfig::default();
    let blobs: Vec<(i64, Vec<u8>, Vec<u8>)> = worker_ids
        .iter()
        .zip(names)
        .zip(0..)
        .map(|((&worker_id, name), w)| {
            // The worker row's own name, also past the 20 the sample reports name.
            let report = ExecutionReport { worker_name: name, ..sample_report(w) };
            let valid =
                runwarden::domain::validation::validate_report(Some(report), made).expect("the sample report is valid");
            let mut state = runwarden::domain::learning::WorkerRunningState::default();
            let analysis = runwarden::domain::analysis::analyze(&valid, &mut state, &scoring);
            (worker_id, valid.encoded, analysis.encode_to_vec())
        })
        .collect();
    let mut c_api = match driver {
        Driver::Server | Driver::Sqlx => None,
        Driver::SqliteCApi => Some(c_api_writer(url)),
    };
    let ingest_connection = store.c_api_writer().filter(|_| driver == Driver::Server);
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut reports = 0u64;
    let mut i = 0u64;
    while started.elapsed() < duration {
        let call = Instant::now();
        let rows = (i..i + per_transaction)
            .map(|k| {
                let (worker_id, report, analysis) = &blobs[usize::try_from(k % workers).unwrap_or(0)];
                let now = to_micros(Utc::now());
                ExecutionRow {
                    id: 0,
                    execution_id: fresh_execution_id(),
                    worker_id: *worker_id,
                    outcome: 1,
                    started_at_us: now,
                    completed_at_us: now,
                    duration_ms: 1200,
                    received_at_us: now,
                    records_fetched: 200,
                    records_processed: 195,
                    records_failed: 5,
                    report: report.clone(),
                    score_reliability: 90.0,
                    score_performance: 100.0,
                    score_data_quality: 80.0,
                    score_resource_efficiency: 95.0,
                    score_overall: 91.0,
                    quality_level: 1,
                    time_of_day_utc: 12,
                    day_of_week: 2,
                    execution_number_today: 1,
                    analysis: Some(analysis.clone()),
                }
            })
            .collect();
        match &mut c_api {
            None if ingest_connection.is_some() => {
                let txn = ingest_connection.expect("checked").begin().await.expect("begin");
                for statement in insert_statements(backend, rows) {
                    txn.execute_raw(statement).await.expect("insert");
                }
                txn.commit().expect("commit");
            }
            None => {
                let txn = store.begin_write().await.expect("begin");
                for statement in insert_statements(backend, rows) {
                    txn.execute_raw(statement).await.expect("insert");
                }
                txn.commit().await.expect("commit");
            }
            Some(conn) => {
                let txn = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).expect("begin");
                for statement in insert_statements(backend, rows) {
                    let mut prepared = txn.prepare_cached(&statement.sql).expect("prepare");
                    for (k, value) in statement.values.iter().flat_map(|v| v.0.iter()).enumerate() {
                        prepared.raw_bind_parameter(k + 1, c_api_value(value)).expect("bind");
                    }
                    prepared.raw_execute().expect("insert");
                }
                txn.commit().expect("commit");
            }
        }
        i += per_transaction;
        reports += per_transaction;
        latencies.push(call.elapsed());
    }
    let elapsed = started.elapsed();
    store.close().await;
    let how = match driver {
        Driver::Server => "",
        Driver::Sqlx if backend == sea_orm::DbBackend::Sqlite => " through sqlx's connection thread",
        Driver::Sqlx => "",
        Driver::SqliteCApi => " on a bare rusqlite connection",
    };
    Run {
        name: format!("raw storage inserts{how}, {per_transaction} per transaction (no server)"),
        reports,
        elapsed,
        latencies,
        server_cpu: None,
        peak_rss_mb: None,
    }
}

/// A connection to the SQLite file of `url` (`sqlite://PATH?…`) with the server's writer settings.
fn c_api_writer(url: &str) -> rusqlite::Connection {
    use runwarden::store::{StoreOptions, c_api};
    let path = url.strip_prefix("sqlite://").and_then(|rest| rest.split('?').next()).expect("a sqlite:// URL");
    let settings = c_api::WriterSettings::from(&StoreOptions::default());
    c_api::open_connection(std::path::Path::new(path), &settings).expect("open")
}

/// A statement value as SQLite's C API binds it (the types the executions rows use).
fn c_api_value(value: &sea_orm::Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as Sql;
    use sea_orm::Value as V;
    let int = |v: Option<i64>| v.map_or(Sql::Null, Sql::Integer);
    match value {
        V::Bool(v) => int(v.map(i64::from)),
        V::Int(v) => int(v.map(i64::from)),
        V::BigInt(v) => int(*v),
        V::Double(v) => v.map_or(Sql::Null, Sql::Real),
        V::String(v) => v.clone().map_or(Sql::Null, Sql::Text),
        V::Bytes(v) => v.clone().map_or(Sql::Null, Sql::Blob),
        other => panic!("the raw baseline binds no {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{metric_value, schedstat_wait_ns, stat_cpu};

    /// The storage limit stores the server's rows: spread evenly over the workers the benchmark's
    /// reports name, each carrying its worker's report in the form the server stores it and an
    /// analysis.
    #[tokio::test]
    async fn raw_rows_are_the_rows_the_server_stores() {
        let through_driver = raw_rows(super::Driver::Server).await;
        // On a bare rusqlite connection and through sqlx the same statements store the same rows,
        // value for value (but the fresh execution ids and clock readings).
        assert_eq!(raw_rows(super::Driver::SqliteCApi).await, through_driver);
        assert_eq!(raw_rows(super::Driver::Sqlx).await, through_driver);
    }

    /// Runs the raw baseline for 200 ms with `driver`, checks its rows, and returns one row's
    /// columns but its execution id and times (and the report blob only by its type, since it holds
    /// both; every stored report is decoded and checked here).
    async fn raw_rows(driver: super::Driver) -> Vec<String> {
        use prost::Message;
        use runwarden::{
            proto::v1::{Analysis, ExecutionReport},
            store::{Store, StoreOptions},
        };
        use sea_orm::{ConnectionTrait, Statement};

        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/raw.db?mode=rwc", dir.path().display());
        let run =
            super::raw_inserts_with(&url, super::Duration::from_millis(200), 100, super::REPORT_WORKERS, driver).await;
        assert!(run.reports >= 100 && run.reports % 100 == 0, "{} rows", run.reports);

        let store = Store::connect(&url, &StoreOptions::default()).await.expect("open");
        let rows = store
            .reader()
            .query_all_raw(Statement::from_string(
                store.backend(),
                "SELECT w.worker_name, e.report, e.analysis FROM executions e JOIN workers w ON w.id = e.worker_id",
            ))
            .await
            .expect("rows");
        let mut per_worker = std::collections::BTreeMap::<String, u64>::new();
        for row in rows {
            let name: String = row.try_get_by_index(0).expect("worker_name");
            let report: Vec<u8> = row.try_get_by_index(1).expect("report");
            let analysis: Vec<u8> = row.try_get_by_index(2).expect("analysis");
            let report = ExecutionReport::decode(report.as_slice()).expect("a report");
            assert_eq!(report.worker_name, name);
            // Validated: the server stores both timestamps and the duration filled in.
            assert!(report.started_at.is_some() && report.completed_at.is_some() && report.duration_ms.is_some());
            let analysis = Analysis::decode(analysis.as_slice()).expect("an analysis");
            assert!(analysis.scores.is_some_and(|s| s.overall > 0.0));
            *per_worker.entry(name).or_default() += 1;
        }
        assert_eq!(per_worker.len() as u64, super::REPORT_WORKERS);
        assert!(per_worker.values().all(|&n| n == run.reports / super::REPORT_WORKERS), "{per_worker:?}");
        let first = store
            .reader()
            .query_one_raw(Statement::from_string(
                store.backend(),
                "SELECT worker_id, typeof(worker_id), outcome, duration_ms, records_fetched, records_processed, \
                 records_failed, typeof(report), score_reliability, typeof(score_reliability), score_performance, \
                 score_data_quality, score_resource_efficiency, score_overall, quality_level, time_of_day_utc, \
                 day_of_week, execution_number_today, hex(analysis), length(execution_id) \
                 FROM executions ORDER BY id LIMIT 1",
            ))
            .await
            .expect("first row")
            .expect("a row");
        let columns = (0..20)
            .map(|k| {
                let text: Result<String, _> = first.try_get_by_index(k);
                text.or_else(|_| first.try_get_by_index::<i64>(k).map(|v| v.to_string()))
                    .or_else(|_| first.try_get_by_index::<f64>(k).map(|v| v.to_string()))
                    .expect("a column")
            })
            .collect();
        store.close().await;
        columns
    }

    /// The benchmark's servers answer without Nagle's delay, as tonic's own `serve` and runwarden
    /// do (`serve_with_incoming` would leave it on).
    #[tokio::test]
    async fn accepted_connections_have_nodelay_set() {
        use tokio_stream::StreamExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut incoming = super::incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let accepted = incoming.next().await.expect("a connection").expect("accepted");
        assert!(accepted.nodelay().expect("TCP_NODELAY readable"));
    }

    #[test]
    fn a_metric_is_read_by_its_whole_name() {
        let text = "# TYPE runwarden_ingest_commit_seconds histogram\n\
                    runwarden_ingest_commit_seconds_bucket{le=\"0.005\"} 7\n\
                    runwarden_ingest_commit_seconds_sum 0.0125\n\
                    runwarden_ingest_commit_seconds_count 9\n";
        assert_eq!(metric_value(text, "runwarden_ingest_commit_seconds_sum"), Some(0.0125));
        assert_eq!(metric_value(text, "runwarden_ingest_commit_seconds_count"), Some(9.0));
        assert_eq!(metric_value(text, "runwarden_ingest_commit_seconds"), None);
        assert_eq!(metric_value(text, "runwarden_ingest_batch_size_sum"), None);
    }

    #[test]
    fn a_stat_line_gives_the_thread_name_and_its_user_plus_system_ticks() {
        let line = "4242 (tokio-rt-worker) S 1 4242 4242 0 -1 4194368 3117 0 0 0 731 122 0 0 20 0 4 0 17 0";
        assert_eq!(stat_cpu(line), Some(("tokio-rt-worker", 731 + 122)));
    }

    #[test]
    fn a_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let line = "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 9 0";
        assert_eq!(stat_cpu(line), Some(("a) b (c)", 11)));
        assert_eq!(stat_cpu("garbage"), None);
    }

    #[test]
    fn the_runqueue_wait_is_schedstat_s_second_field() {
        assert_eq!(schedstat_wait_ns("504123456 239000111 17530\n"), Some(239_000_111));
        assert_eq!(schedstat_wait_ns("504123456"), None);
        assert_eq!(schedstat_wait_ns(""), None);
    }
}
