//! The test harness: [`spawn_app`] starts a real runwarden on port 0 against a fresh database
//! (a temp SQLite file, or a fresh PostgreSQL database when asked) and hands back typed gRPC,
//! grpc-web and REST clients. Logs only when `TEST_LOG` is set.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Once,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use runwarden::{
    App, Config,
    api::{Clock, SystemClock},
    detector::Detector,
    guardian::Guardian,
    proto::v1::{
        ExecutionReport, Outcome, SubmitReportRequest, SubmitReportResponse, query_service_client::QueryServiceClient,
        report_service_client::ReportServiceClient, worker_service_client::WorkerServiceClient,
    },
};
use sqlx::{Connection, Executor, PgConnection};
use tempfile::TempDir;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

/// The database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Declares `name` once per backend: `sqlite::name` always runs; `postgres::name` runs against
/// `RUNWARDEN_TEST_POSTGRES_URL` and fails (rather than silently passing) when CI forgot to set it.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if $crate::helpers::postgres_url().is_none() {
                        return;
                    }
                    super::$name($crate::helpers::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// The PostgreSQL server to test against. In CI (`CI` set) its absence is a failure.
pub fn postgres_url() -> Option<String> {
    match std::env::var("RUNWARDEN_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(std::env::var("CI").is_err(), "CI must set RUNWARDEN_TEST_POSTGRES_URL");
            None
        }
    }
}

fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            runwarden::telemetry::init_logging(runwarden::config::LogFormat::Human);
        }
    });
}

/// A fresh, empty database for one test.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<TempDir>,
}

impl TestDatabase {
    /// Another handle on a database some other test value owns (for a second replica).
    pub fn borrowed(url: &str) -> TestDatabase {
        TestDatabase { url: url.to_owned(), _dir: None }
    }

    pub async fn create(backend: Backend) -> TestDatabase {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("runwarden.db").display());
                TestDatabase { url, _dir: Some(dir) }
            }
            Backend::Postgres => {
                let base = postgres_url().expect("RUNWARDEN_TEST_POSTGRES_URL");
                let name = format!("rw_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = PgConnection::connect(&base).await.expect("connect to PostgreSQL");
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.expect("create database");
                let (prefix, query) = match base.split_once('?') {
                    Some((p, q)) => (p, format!("?{q}")),
                    None => (base.as_str(), String::new()),
                };
                let root = prefix.rsplit_once('/').map_or(prefix, |(root, _)| root);
                TestDatabase { url: format!("{root}/{name}{query}"), _dir: None }
            }
        }
    }
}

/// A running server and clients for each of its faces.
pub struct TestApp {
    pub addr: SocketAddr,
    pub report: ReportServiceClient<Channel>,
    pub query: QueryServiceClient<Channel>,
    pub http: reqwest::Client,
    pub channel: Channel,
    pub guardian: Arc<Guardian>,
    pub detector: Arc<Detector>,
    pub retention: Arc<runwarden::retention::Retention>,
    pub workers: WorkerServiceClient<Channel>,
    pub auth: Arc<runwarden::auth::Auth>,
    pub alerts: Arc<runwarden::alerts::Alerts>,
    db: Option<TestDatabase>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(TestDatabase::create(backend).await, |_| {}).await
}

/// A clock the test moves by hand.
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn starting_now() -> Arc<ManualClock> {
        Self::starting_at(Utc::now())
    }

    pub fn starting_at(at: DateTime<Utc>) -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicI64::new(at.timestamp_micros())))
    }

    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds * 1_000_000, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.0.load(Ordering::SeqCst)).unwrap_or_default()
    }
}

/// Starts a server on `db`, letting the test adjust the configuration first. Background tasks
/// (the guardian's tick) are off unless the test turns them on: tests tick by hand.
pub async fn spawn_app_with(db: TestDatabase, configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with_clock(db, configure, Arc::new(SystemClock)).await
}

pub async fn spawn_app_with_clock(
    db: TestDatabase,
    configure: impl FnOnce(&mut Config),
    clock: Arc<dyn Clock>,
) -> TestApp {
    init_logging();
    let mut config = Config::new("127.0.0.1:0".parse().expect("addr"), db.url.clone());
    config.shutdown_timeout = Duration::from_secs(5);
    config.background_tasks = false;
    configure(&mut config);
    let tls = config.tls.is_some();
    let app = App::build_with_clock(config, clock).await.expect("server starts");
    let addr = app.local_addr();
    let guardian = app.guardian();
    let detector = app.detector();
    let retention = app.retention();
    let auth = app.auth();
    let alerts = app.alerts();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let endpoint = Channel::from_shared(format!("http://{addr}")).expect("uri");
    // A TLS server's test makes its own clients; this one stays unconnected.
    let channel = if tls { endpoint.connect_lazy() } else { endpoint.connect().await.expect("connect") };
    let workers = WorkerServiceClient::new(channel.clone());
    TestApp {
        addr,
        report: ReportServiceClient::new(channel.clone()),
        query: QueryServiceClient::new(channel.clone()),
        channel,
        guardian,
        detector,
        retention,
        workers,
        auth,
        alerts,
        http: reqwest::Client::new(),
        db: Some(db),
        stop: Some(stop),
        handle: Some(handle),
    }
}

impl TestApp {
    /// The database URL the server runs on.
    pub fn database_url(&self) -> String {
        self.db.as_ref().map(|db| db.url.clone()).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server gracefully and hands back its database.
    pub async fn stop(mut self) -> TestDatabase {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.expect("server task").expect("server ran cleanly");
        }
        self.db.take().expect("database")
    }

    /// Every stored execution id, newest first, walking ListExecutions page by page.
    pub async fn all_execution_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .query
                .clone()
                .list_executions(runwarden::proto::v1::ListExecutionsRequest {
                    limit: 500,
                    page_token: token.clone(),
                    ..Default::default()
                })
                .await
                .expect("list")
                .into_inner();
            ids.extend(page.executions.into_iter().map(|e| e.execution_id));
            if page.next_page_token.is_empty() {
                return ids;
            }
            token = page.next_page_token;
        }
    }

    /// Submits a report over gRPC.
    pub async fn submit(&self, report: ExecutionReport) -> Result<SubmitReportResponse, tonic::Status> {
        self.report.clone().submit_report(SubmitReportRequest { report: Some(report) }).await.map(|r| r.into_inner())
    }

    /// Sends one grpc-web request (binary framing, HTTP/1.1) and returns the raw response.
    async fn grpc_web_post<Req: Message>(&self, path: &str, request: &Req) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .body(grpc_web_frame(request))
            .send()
            .await
            .expect("grpc-web request")
    }

    /// One unary call over grpc-web (HTTP/1.1, binary framing), as a browser makes it.
    pub async fn grpc_web<Req: Message, Resp: Message + Default>(
        &self,
        path: &str,
        request: &Req,
    ) -> Result<Resp, (String, String)> {
        let response = self.grpc_web_post(path, request).await;
        assert_eq!(response.version(), reqwest::Version::HTTP_11);
        let header_status = response.headers().get("grpc-status").map(|v| v.to_str().unwrap_or("").to_owned());
        let header_message = response.headers().get("grpc-message").map(|v| v.to_str().unwrap_or("").to_owned());
        let mut bytes: Bytes = response.bytes().await.expect("body");
        let mut message = None;
        let mut trailers = String::new();
        while bytes.remaining() >= 5 {
            let flag = bytes.get_u8();
            let len = bytes.get_u32() as usize;
            let frame = bytes.split_to(len);
            if flag & 0x80 == 0 {
                message = Some(Resp::decode(frame).expect("decode message"));
            } else {
                trailers = String::from_utf8_lossy(&frame).into_owned();
            }
        }
        let trailer = |name: &str| {
            trailers.lines().find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_owned())
            })
        };
        let status = header_status.or_else(|| trailer("grpc-status")).unwrap_or_default();
        if status == "0" {
            Ok(message.expect("a message with status 0"))
        } else {
            Err((status, header_message.or_else(|| trailer("grpc-message")).unwrap_or_default()))
        }
    }
}

impl TestApp {
    /// Opens a server-streaming call over grpc-web (HTTP/1.1) and returns a reader of its
    /// messages, as a browser's fetch stream sees them.
    pub async fn grpc_web_stream<Req: Message>(&self, path: &str, request: &Req) -> GrpcWebStream {
        let response = self.grpc_web_post(path, request).await;
        assert_eq!(response.status(), 200);
        GrpcWebStream { response, buffer: BytesMut::new() }
    }
}

/// The message frames of a grpc-web response, read as they arrive.
pub struct GrpcWebStream {
    response: reqwest::Response,
    buffer: BytesMut,
}

impl GrpcWebStream {
    /// The next message; `None` at the trailers or the end.
    pub async fn next<T: Message + Default>(&mut self) -> Option<T> {
        loop {
            if self.buffer.len() >= 5 {
                let flag = self.buffer[0];
                let len = u32::from_be_bytes([self.buffer[1], self.buffer[2], self.buffer[3], self.buffer[4]]) as usize;
                if self.buffer.len() >= 5 + len {
                    let mut frame = self.buffer.split_to(5 + len);
                    frame.advance(5);
                    if flag & 0x80 != 0 {
                        return None;
                    }
                    return Some(T::decode(frame.freeze()).expect("decode message"));
                }
            }
            match self.response.chunk().await.expect("read grpc-web stream") {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                None => return None,
            }
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A complete, valid report for `worker`.
pub fn report(worker: &str) -> ExecutionReport {
    ExecutionReport {
        worker_name: worker.into(),
        worker_type: "analytics".into(),
        outcome: Outcome::Success as i32,
        duration_ms: Some(1500),
        data_verification: Some(runwarden::proto::v1::DataVerification {
            records_fetched: 200,
            records_processed: 195,
            records_failed: 5,
            validation_checks_passed: 10,
            api_calls_made: 4,
            api_calls_succeeded: 4,
            cache_writes: 4,
            ..Default::default()
        }),
        resource_metrics: Some(runwarden::proto::v1::ResourceMetrics {
            memory_peak_mb: Some(128.0),
            redis_operations: 12,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A report with an explicit id and start time (seconds before now).
/// A run of `worker` that started `minutes_ago`, lasting `duration_ms`, with `outcome`.
pub fn run(worker: &str, minutes_ago: i64, duration_ms: i64, outcome: Outcome) -> ExecutionReport {
    ExecutionReport {
        execution_id: uuid::Uuid::new_v4().to_string(),
        started_at: Some(runwarden::domain::validation::to_timestamp(
            chrono::Utc::now() - chrono::TimeDelta::minutes(minutes_ago),
        )),
        duration_ms: Some(duration_ms),
        outcome: outcome as i32,
        ..report(worker)
    }
}

pub fn report_at(worker: &str, seconds_ago: i64) -> ExecutionReport {
    let started = chrono::Utc::now() - chrono::TimeDelta::seconds(seconds_ago);
    ExecutionReport {
        execution_id: uuid::Uuid::new_v4().to_string(),
        started_at: Some(runwarden::domain::validation::to_timestamp(started)),
        duration_ms: Some(1000),
        ..report(worker)
    }
}

/// The real `runwarden serve` binary with JSON logs at `rust_log` into a file, for tests that read
/// what it logs. Killed when dropped.
pub struct LoggedServer {
    pub addr: String,
    child: std::process::Child,
    log: tempfile::NamedTempFile,
}

impl LoggedServer {
    pub async fn start(database_url: &str, rust_log: &str) -> LoggedServer {
        use std::process::{Command, Stdio};
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_runwarden"))
            .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0", "--database", database_url])
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::from(log.reopen().expect("log")))
            .stderr(Stdio::from(log.reopen().expect("log")))
            .spawn()
            .expect("serve");
        let mut server = LoggedServer { addr: String::new(), child, log };
        for _ in 0..300 {
            if let Some(line) = server.text().lines().find(|l| l.contains("runwarden ready")) {
                let value: serde_json::Value = serde_json::from_str(line).expect("json");
                server.addr = value["addr"].as_str().expect("the ready line names the address").to_owned();
                return server;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the server did not log that it is ready: {}", server.text());
    }

    /// What it has logged so far.
    pub fn text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Stops it; what it logged stays readable.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LoggedServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One uncompressed grpc-web (or gRPC) message frame: flag, length, message.
pub fn grpc_web_frame(request: &impl Message) -> Bytes {
    let mut body = BytesMut::new();
    body.put_u8(0);
    body.put_u32(request.encoded_len() as u32);
    request.encode(&mut body).expect("encode");
    body.freeze()
}
