//! The command line and the configuration it resolves to. Every setting comes from, in order of
//! precedence: a flag, its `RUNWARDEN_*` environment variable, the TOML config file, the default.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::{
    detector::DetectorConfig,
    domain::{
        guardian::GuardianConfig,
        scoring::{ScoringConfig, Weights},
    },
    retention::RetentionConfig,
    store::{StoreOptions, Synchronous, ingest::IngestConfig},
};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://runwarden.db?mode=rwc";
/// Largest request accepted on any face: 1 MiB.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// runwarden: the control plane scheduled workers report to after every run.
#[derive(Debug, Parser)]
#[command(name = "runwarden", version, about, long_about = None)]
pub struct Cli {
    /// Log format: `human` for terminals, `json` for log collectors.
    #[arg(long, global = true, env = "RUNWARDEN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve gRPC, grpc-web, REST and /metrics on one port (applies migrations first).
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate(DatabaseArgs),
    /// Maintain the hourly rollups statistics are read from.
    #[command(subcommand)]
    Rollup(RollupCommand),
    /// Ask a running server's grpc.health.v1 whether it is SERVING (exit 0) or not (exit 1).
    Health(HealthArgs),
    /// Run a command and report it as a run of a worker (for crontabs): exits with the command's
    /// exit code, whether or not the report got through.
    Exec(ExecArgs),
    /// Write a consistent copy of the SQLite database to a new file while the server runs
    /// (`VACUUM INTO`); restore by putting the copy in place of the database with the server stopped.
    Backup(BackupArgs),
    /// Manage API tokens (scopes report:write, read, admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Fill an empty database with realistic demo histories (five workers, anomalies, a silent
    /// worker, guardian streams) through the ingest path; refuses a database that has workers.
    Demo(DemoArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Days of history to invent, ending now (raw runs are kept 30 days).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=30))]
    pub days: u32,
}

#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The file to create (it must not exist).
    #[arg(long)]
    pub to: PathBuf,
}

/// `runwarden exec --worker NAME [--addr HOST:PORT] [--timeout SECS] -- COMMAND ARGS...`
#[derive(Debug, Clone, Args)]
pub struct ExecArgs {
    /// The worker the run is reported as.
    #[arg(long)]
    pub worker: String,
    /// The worker's type, reported with the run.
    #[arg(long, default_value = "")]
    pub worker_type: String,
    /// runwarden's gRPC address.
    #[arg(long, env = "RUNWARDEN_ADDR", default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// Kill the command after this many seconds and report TIMEOUT (exit code 124).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Seconds to wait for runwarden per report attempt (3 attempts).
    #[arg(long, default_value_t = 5)]
    pub report_timeout: u64,
    /// A report:write token, when the server requires auth.
    #[arg(long, env = "RUNWARDEN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA certificate to trust for an https:// address.
    #[arg(long, env = "RUNWARDEN_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// The command and its arguments, after `--`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum RollupCommand {
    /// Recompute every rollup from raw executions (one write transaction; ingest waits meanwhile).
    Rebuild(DatabaseArgs),
}

#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// The server to ask.
    #[arg(long, env = "RUNWARDEN_ADDR", default_value = DEFAULT_LISTEN)]
    pub addr: String,
    /// The service to ask about; empty means the whole server.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5)]
    pub timeout: u64,
    /// PEM CA certificate to trust for an https:// address.
    #[arg(long, env = "RUNWARDEN_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

/// Where the database and the config file are; shared by every subcommand that opens the database.
#[derive(Debug, Clone, Args, Default)]
pub struct DatabaseArgs {
    /// Database URL: sqlite://PATH?mode=rwc or postgres://USER@HOST:PORT/DB
    /// [default: sqlite://runwarden.db?mode=rwc]
    #[arg(long = "database", env = "RUNWARDEN_DATABASE_URL")]
    pub database_url: Option<String>,
    /// TOML config file; its keys are the long flag names with '_' for '-'.
    #[arg(long, env = "RUNWARDEN_CONFIG")]
    pub config: Option<PathBuf>,
    /// SQLite durability: `full` survives power loss, `normal` survives process crashes [default: full].
    #[arg(long, env = "RUNWARDEN_SQLITE_SYNCHRONOUS", value_enum)]
    pub sqlite_synchronous: Option<Synchronous>,
}

#[derive(Debug, Clone, Args, Default)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Address to listen on; port 0 picks a free port [default: 127.0.0.1:50051].
    #[arg(long, env = "RUNWARDEN_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Do not apply migrations at start (serve fails if the schema is not current).
    #[arg(long, env = "RUNWARDEN_NO_MIGRATE")]
    pub no_migrate: bool,
    /// Reports waiting for the writer before submissions get RESOURCE_EXHAUSTED [default: 10000].
    #[arg(long, env = "RUNWARDEN_QUEUE_CAPACITY")]
    pub queue_capacity: Option<usize>,
    /// Most reports committed in one transaction [default: 2000].
    #[arg(long, env = "RUNWARDEN_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// Milliseconds a unary SubmitReport that finds the queue full waits for a place before it
    /// gets RESOURCE_EXHAUSTED; 0 refuses at once [default: 100].
    #[arg(long, env = "RUNWARDEN_ADMISSION_WAIT_MS")]
    pub admission_wait_ms: Option<u64>,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT [default: 10].
    #[arg(long, env = "RUNWARDEN_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Option<u64>,
    /// Require a token on every call even before the first token exists (auth is otherwise on
    /// as soon as one token was created).
    #[arg(long, env = "RUNWARDEN_REQUIRE_AUTH")]
    pub require_auth: bool,
    /// Allow listening on a non-loopback address without auth (refused otherwise).
    #[arg(long, env = "RUNWARDEN_INSECURE")]
    pub insecure: bool,
    /// PEM certificate chain: serve TLS (with --tls-key).
    #[arg(long, env = "RUNWARDEN_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "RUNWARDEN_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: require client certificates signed by them (mutual TLS).
    #[arg(long, env = "RUNWARDEN_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

/// `runwarden token create|list|revoke`: API tokens, straight on the database.
#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (once: only its hash is stored).
    Create(TokenCreateArgs),
    /// List tokens (never their secrets).
    List(DatabaseArgs),
    /// Revoke a token by id or name; running servers stop accepting it within seconds.
    Revoke(TokenRevokeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct TokenCreateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// A unique name saying who holds it ("analytics-workers", "grafana").
    #[arg(long)]
    pub name: String,
    /// report:write (workers), read (dashboards, Prometheus) or admin.
    #[arg(long)]
    pub scope: String,
    /// report:write only: the token may only report for workers whose name starts with this.
    #[arg(long)]
    pub worker_prefix: Option<String>,
    /// Lifetime such as 90d, 12h or 30m [default: never expires].
    #[arg(long)]
    pub expires: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct TokenRevokeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The token's id or name.
    pub token: String,
}

/// The config file. Unknown keys are an error, so a typo does not silently fall back.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub database: Option<String>,
    pub no_migrate: Option<bool>,
    pub sqlite_synchronous: Option<Synchronous>,
    pub queue_capacity: Option<usize>,
    pub max_batch: Option<usize>,
    pub admission_wait_ms: Option<u64>,
    pub shutdown_timeout: Option<u64>,
    pub pool_size: Option<u32>,
    pub sqlite_writer_cache_mib: Option<u32>,
    pub sqlite_ingest_c_api: Option<bool>,
    pub scoring: Option<ScoringFile>,
    pub guardian: Option<GuardianFile>,
    pub detector: Option<DetectorFile>,
    pub retention: Option<RetentionFile>,
    pub auth: Option<AuthFile>,
    pub limits: Option<LimitsFile>,
    pub tls: Option<TlsFile>,
    pub alerts: Option<AlertsFile>,
}

/// `[alerts]`, `[[alerts.webhooks]]`, `[[alerts.rules]]` (docs/alerts.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsFile {
    /// Alertmanager's base URL, e.g. `http://alertmanager:9093`.
    pub alertmanager_url: Option<String>,
    /// Seconds between re-sends of firing alerts to Alertmanager (default 60).
    pub alertmanager_resend_seconds: Option<f64>,
    /// The dashboard's base URL, for links in alerts.
    pub dashboard_url: Option<String>,
    /// Seconds between sender passes (default 2).
    pub interval_seconds: Option<f64>,
    /// First retry delay in seconds (default 2), doubling up to `retry_max_seconds` (default 300).
    pub retry_initial_seconds: Option<f64>,
    pub retry_max_seconds: Option<f64>,
    /// Attempts before a delivery is given up (default 25).
    pub max_attempts: Option<u32>,
    /// Seconds per attempt (default 10).
    pub timeout_seconds: Option<f64>,
    #[serde(default)]
    pub webhooks: Vec<crate::alerts::WebhookConfig>,
    #[serde(default)]
    pub rules: Vec<crate::domain::alerting::Rule>,
}

impl AlertsFile {
    fn apply(&self, config: &mut crate::alerts::AlertsConfig) -> Result<(), String> {
        let seconds = |name: &str, v: Option<f64>, target: &mut Duration| -> Result<(), String> {
            if let Some(v) = v {
                *target = Duration::try_from_secs_f64(v)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| format!("[alerts] {name} must be a positive number of seconds, got {v}"))?;
            }
            Ok(())
        };
        config.alertmanager_url.clone_from(&self.alertmanager_url);
        config.dashboard_url.clone_from(&self.dashboard_url);
        seconds("alertmanager_resend_seconds", self.alertmanager_resend_seconds, &mut config.alertmanager_resend)?;
        seconds("interval_seconds", self.interval_seconds, &mut config.interval)?;
        seconds("retry_initial_seconds", self.retry_initial_seconds, &mut config.retry_initial)?;
        seconds("retry_max_seconds", self.retry_max_seconds, &mut config.retry_max)?;
        seconds("timeout_seconds", self.timeout_seconds, &mut config.timeout)?;
        if let Some(n) = self.max_attempts {
            if n == 0 {
                return Err("[alerts] max_attempts must be at least 1".into());
            }
            config.max_attempts = n;
        }
        config.webhooks.clone_from(&self.webhooks);
        config.rules.clone_from(&self.rules);
        config.validate().map_err(|e| format!("invalid [alerts] settings: {e}"))
    }
}

/// `[auth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// As `--require-auth`.
    pub require: Option<bool>,
    /// Serve `/metrics` without a token (default false: it needs a read token when auth is on).
    pub metrics_open: Option<bool>,
}

/// `[limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Average requests per second per token (default 1000; 0 turns it off).
    pub requests_per_second: Option<f64>,
    /// Requests per token allowed at once above the rate (default 2000).
    pub burst: Option<f64>,
    /// Seconds a unary call or an upload may take (default 60).
    pub request_timeout_seconds: Option<f64>,
    /// Seconds an HTTP/1.1 client gets to send its request head (default 10).
    pub header_read_timeout_seconds: Option<f64>,
    /// Largest request head or header list in bytes (default 65536).
    pub max_header_bytes: Option<usize>,
    /// Concurrent streams per HTTP/2 connection (default 256).
    pub max_concurrent_streams: Option<u32>,
}

/// `[tls]`: as `--tls-cert`, `--tls-key`, `--tls-client-ca`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
}

/// `[retention]`: how long rows are kept, in days.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionFile {
    /// Raw executions (default 30).
    pub executions_days: Option<u32>,
    /// Hour and day rollups, which statistics read (default 400).
    pub rollups_days: Option<u32>,
    /// Resolved anomalies (default 90).
    pub resolved_anomalies_days: Option<u32>,
    /// Alert history: state changes, their sends and delivery attempts (default 90). An alert's
    /// current state is kept whatever its age.
    pub alerts_days: Option<u32>,
    /// Seconds between passes (default 3600).
    pub interval_seconds: Option<u64>,
}

/// `[detector]`: the missed-run detector.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorFile {
    /// Seconds between passes (default 30).
    pub interval_seconds: Option<f64>,
}

/// `[guardian]`: the stream guardian's thresholds, in seconds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardianFile {
    pub tick_interval_seconds: Option<f64>,
    pub heartbeat_flush_seconds: Option<f64>,
    pub stale_after_seconds: Option<i64>,
    pub orphan_after_seconds: Option<i64>,
    pub retention_seconds: Option<i64>,
    pub stale_warning: Option<u64>,
    pub orphaned_warning: Option<u64>,
    pub orphan_rate_warning: Option<f64>,
    /// Stream types accepted beside the built-in ones.
    pub extra_stream_types: Option<Vec<String>>,
}

impl GuardianFile {
    fn apply(&self, config: &mut GuardianConfig) -> Result<(), String> {
        if let Some(s) = self.tick_interval_seconds {
            config.tick_interval =
                Duration::try_from_secs_f64(s).map_err(|e| format!("[guardian] tick_interval_seconds: {e}"))?;
        }
        if let Some(s) = self.heartbeat_flush_seconds {
            config.flush_interval =
                Duration::try_from_secs_f64(s).map_err(|e| format!("[guardian] heartbeat_flush_seconds: {e}"))?;
        }
        if let Some(s) = self.stale_after_seconds {
            config.stale_after = chrono::TimeDelta::seconds(s);
        }
        if let Some(s) = self.orphan_after_seconds {
            config.orphan_after = chrono::TimeDelta::seconds(s);
        }
        if let Some(s) = self.retention_seconds {
            config.retention = chrono::TimeDelta::seconds(s);
        }
        if let Some(n) = self.stale_warning {
            config.stale_warning = n;
        }
        if let Some(n) = self.orphaned_warning {
            config.orphaned_warning = n;
        }
        if let Some(r) = self.orphan_rate_warning {
            config.orphan_rate_warning = r;
        }
        if let Some(types) = &self.extra_stream_types {
            config.extra_stream_types.clone_from(types);
        }
        config.validate().map_err(|e| format!("invalid [guardian] settings: {e}"))
    }
}

/// `[scoring]`: the knobs of `docs/scoring.md`. Weights must sum to 1.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringFile {
    pub weights: Option<WeightsFile>,
    pub partial_credit: Option<f64>,
    pub skipped_credit: Option<f64>,
    pub min_history_for_performance: Option<u64>,
    pub memory_limit_mb: Option<f64>,
    pub cpu_limit_percent: Option<f64>,
    pub db_query_limit: Option<u64>,
    pub freshness_limit_seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsFile {
    pub reliability: f64,
    pub performance: f64,
    pub data_quality: f64,
    pub resource_efficiency: f64,
}

impl ScoringFile {
    fn apply(&self, config: &mut ScoringConfig) -> Result<(), String> {
        if let Some(w) = &self.weights {
            config.weights = Weights {
                reliability: w.reliability,
                performance: w.performance,
                data_quality: w.data_quality,
                resource_efficiency: w.resource_efficiency,
            };
        }
        let set = |target: &mut f64, value: Option<f64>| {
            if let Some(v) = value {
                *target = v;
            }
        };
        set(&mut config.partial_credit, self.partial_credit);
        set(&mut config.skipped_credit, self.skipped_credit);
        set(&mut config.memory_limit_mb, self.memory_limit_mb);
        set(&mut config.cpu_limit_percent, self.cpu_limit_percent);
        set(&mut config.freshness_limit_seconds, self.freshness_limit_seconds);
        if let Some(n) = self.min_history_for_performance {
            config.min_history_for_performance = n;
        }
        if let Some(n) = self.db_query_limit {
            config.db_query_limit = n;
        }
        config.validate().map_err(|e| format!("invalid [scoring] settings: {e}"))
    }
}

/// Everything the server needs, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub migrate: bool,
    pub store: StoreOptions,
    pub ingest: IngestConfig,
    pub guardian: GuardianConfig,
    pub detector: DetectorConfig,
    pub retention: RetentionConfig,
    pub shutdown_timeout: Duration,
    /// Run the guardian's tick and heartbeat flush in the background (tests drive them by hand).
    pub background_tasks: bool,
    pub auth: crate::auth::AuthConfig,
    /// Listening beyond loopback without auth was explicitly allowed.
    pub insecure: bool,
    pub tls: Option<crate::transport::TlsFiles>,
    pub limits: crate::transport::Limits,
    pub alerts: crate::alerts::AlertsConfig,
}

impl Config {
    /// Defaults with the given listen address and database, for tests and embedding.
    pub fn new(listen: SocketAddr, database_url: impl Into<String>) -> Config {
        Config {
            listen,
            database_url: database_url.into(),
            migrate: true,
            store: StoreOptions::default(),
            ingest: IngestConfig::default(),
            guardian: GuardianConfig::default(),
            detector: DetectorConfig::default(),
            retention: RetentionConfig::default(),
            shutdown_timeout: Duration::from_secs(10),
            background_tasks: true,
            auth: crate::auth::AuthConfig::default(),
            insecure: false,
            tls: None,
            limits: crate::transport::Limits::default(),
            alerts: crate::alerts::AlertsConfig::default(),
        }
    }

    pub fn resolve(args: &ServeArgs) -> Result<Config, String> {
        let file = load_file(args.database.config.as_deref())?;
        let default_listen: SocketAddr = DEFAULT_LISTEN.parse().map_err(|e| format!("{e}"))?;
        let mut config =
            Config::new(args.listen.or(file.listen).unwrap_or(default_listen), resolve_database(&args.database, &file));
        config.migrate = !(args.no_migrate || file.no_migrate.unwrap_or(false));
        config.store.synchronous = args.database.sqlite_synchronous.or(file.sqlite_synchronous).unwrap_or_default();
        if let Some(size) = file.pool_size {
            config.store.pool_size = size;
        }
        if let Some(mib) = file.sqlite_writer_cache_mib {
            config.store.writer_cache_mib = mib;
        }
        if let Some(on) = file.sqlite_ingest_c_api {
            config.store.ingest_c_api = on;
        }
        if let Some(capacity) = args.queue_capacity.or(file.queue_capacity) {
            config.ingest.queue_capacity = capacity;
        }
        if let Some(batch) = args.max_batch.or(file.max_batch) {
            config.ingest.max_batch = batch;
        }
        if let Some(ms) = args.admission_wait_ms.or(file.admission_wait_ms) {
            config.ingest.admission_wait = Duration::from_millis(ms);
        }
        if let Some(secs) = args.shutdown_timeout.or(file.shutdown_timeout) {
            config.shutdown_timeout = Duration::from_secs(secs);
        }
        if let Some(scoring) = &file.scoring {
            scoring.apply(&mut config.ingest.scoring)?;
        }
        if let Some(guardian) = &file.guardian {
            guardian.apply(&mut config.guardian)?;
        }
        if let Some(secs) = file.detector.as_ref().and_then(|d| d.interval_seconds) {
            config.detector.interval = Duration::try_from_secs_f64(secs)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("[detector] interval_seconds must be a positive number, got {secs}"))?;
        }
        if let Some(r) = &file.retention {
            let days = |name: &str, d: u32| {
                if d == 0 {
                    Err(format!("[retention] {name} must be at least 1"))
                } else {
                    Ok(chrono::TimeDelta::days(i64::from(d)))
                }
            };
            if let Some(d) = r.executions_days {
                config.retention.executions = days("executions_days", d)?;
            }
            if let Some(d) = r.rollups_days {
                config.retention.rollups = days("rollups_days", d)?;
            }
            if let Some(d) = r.resolved_anomalies_days {
                config.retention.resolved_anomalies = days("resolved_anomalies_days", d)?;
            }
            if let Some(d) = r.alerts_days {
                config.retention.alerts = days("alerts_days", d)?;
            }
            if let Some(secs) = r.interval_seconds.filter(|s| *s > 0) {
                config.retention.interval = Duration::from_secs(secs);
            }
        }
        if let Some(alerts) = &file.alerts {
            alerts.apply(&mut config.alerts)?;
        }
        config.insecure = args.insecure;
        let auth = file.auth.as_ref();
        config.auth.require = args.require_auth || auth.and_then(|a| a.require).unwrap_or(false);
        config.auth.metrics_open = auth.and_then(|a| a.metrics_open).unwrap_or(false);
        if let Some(l) = &file.limits {
            apply_limits(l, &mut config)?;
        }
        let tls = file.tls.as_ref();
        let cert = args.tls_cert.clone().or_else(|| tls.and_then(|t| t.cert.clone()));
        let key = args.tls_key.clone().or_else(|| tls.and_then(|t| t.key.clone()));
        let client_ca = args.tls_client_ca.clone().or_else(|| tls.and_then(|t| t.client_ca.clone()));
        config.tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(crate::transport::TlsFiles { cert, key, client_ca }),
            (None, None) if client_ca.is_none() => None,
            _ => return Err("TLS needs both a certificate and a key (--tls-cert and --tls-key)".into()),
        };
        if config.ingest.queue_capacity == 0 || config.ingest.max_batch == 0 {
            return Err("queue_capacity and max_batch must be at least 1".into());
        }
        if config.ingest.admission_wait > Duration::from_secs(10) {
            return Err(
                "admission_wait_ms must be at most 10000 (a call waits that long for a place in a full queue)".into()
            );
        }
        Ok(config)
    }
}

fn apply_limits(l: &LimitsFile, config: &mut Config) -> Result<(), String> {
    let seconds = |name: &str, v: f64| {
        Duration::try_from_secs_f64(v)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("[limits] {name} must be a positive number of seconds, got {v}"))
    };
    if let Some(r) = l.requests_per_second {
        if !(r.is_finite() && r >= 0.0) {
            return Err(format!("[limits] requests_per_second must be 0 (off) or positive, got {r}"));
        }
        config.auth.rate_per_second = r;
    }
    if let Some(b) = l.burst {
        if !(b.is_finite() && b >= 1.0) {
            return Err(format!("[limits] burst must be at least 1, got {b}"));
        }
        config.auth.burst = b;
    }
    if let Some(v) = l.request_timeout_seconds {
        config.limits.request_timeout = seconds("request_timeout_seconds", v)?;
    }
    if let Some(v) = l.header_read_timeout_seconds {
        config.limits.header_read_timeout = seconds("header_read_timeout_seconds", v)?;
    }
    if let Some(n) = l.max_header_bytes {
        if n < 1024 {
            return Err(format!("[limits] max_header_bytes must be at least 1024, got {n}"));
        }
        config.limits.max_header_bytes = n;
    }
    if let Some(n) = l.max_concurrent_streams {
        if n == 0 {
            return Err("[limits] max_concurrent_streams must be at least 1".into());
        }
        config.limits.max_concurrent_streams = n;
    }
    Ok(())
}

/// The database URL and store options for subcommands that only open the database.
pub fn resolve_store(args: &DatabaseArgs) -> Result<(String, StoreOptions), String> {
    let file = load_file(args.config.as_deref())?;
    let options = StoreOptions {
        synchronous: args.sqlite_synchronous.or(file.sqlite_synchronous).unwrap_or_default(),
        pool_size: file.pool_size.unwrap_or(StoreOptions::default().pool_size),
        writer_cache_mib: file.sqlite_writer_cache_mib.unwrap_or(StoreOptions::default().writer_cache_mib),
        ingest_c_api: file.sqlite_ingest_c_api.unwrap_or(StoreOptions::default().ingest_c_api),
        ..StoreOptions::default()
    };
    Ok((resolve_database(args, &file), options))
}

fn resolve_database(args: &DatabaseArgs, file: &FileConfig) -> String {
    args.database_url.clone().or_else(|| file.database.clone()).unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
}

fn load_file(path: Option<&std::path::Path>) -> Result<FileConfig, String> {
    let Some(path) = path else { return Ok(FileConfig::default()) };
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("invalid config file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ingest::DEFAULT_ADMISSION_WAIT;

    #[test]
    fn flags_beat_file_beat_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("runwarden.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:7000\"\ndatabase = \"sqlite://file.db\"\nqueue_capacity = 5\n")
            .expect("write");
        let mut args = ServeArgs::default();
        args.database.config = Some(path.clone());
        let config = Config::resolve(&args).expect("resolves");
        assert_eq!(config.listen.port(), 7000);
        assert_eq!(config.database_url, "sqlite://file.db");
        assert_eq!(config.ingest.queue_capacity, 5);
        assert_eq!(config.ingest.max_batch, crate::store::ingest::DEFAULT_MAX_BATCH);

        args.listen = Some("127.0.0.1:9000".parse().expect("addr"));
        args.database.database_url = Some("postgres://x@h/db".into());
        let config = Config::resolve(&args).expect("resolves");
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.database_url, "postgres://x@h/db");
    }

    /// `sqlite_ingest_c_api` is on unless the file turns it off, for `serve` and for the commands
    /// that open the store themselves.
    #[test]
    fn the_ingest_connection_is_configurable() {
        assert!(Config::resolve(&ServeArgs::default()).expect("resolves").store.ingest_c_api);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c_api.toml");
        std::fs::write(&path, "sqlite_ingest_c_api = false\n").expect("write");
        let mut args = ServeArgs::default();
        args.database.config = Some(path);
        assert!(!Config::resolve(&args).expect("resolves").store.ingest_c_api);
        let (_, options) = resolve_store(&args.database).expect("resolves");
        assert!(!options.ingest_c_api);
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "lisen = \"127.0.0.1:7000\"\n").expect("write");
        let mut args = ServeArgs::default();
        args.database.config = Some(path);
        let err = Config::resolve(&args).expect_err("typo is refused");
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn scoring_weights_are_configurable_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("scoring.toml");
        let weights =
            "[scoring.weights]\nreliability = 0.4\nperformance = 0.2\ndata_quality = 0.3\nresource_efficiency = 0.1\n";
        std::fs::write(&path, format!("[scoring]\nmemory_limit_mb = 1024.0\n{weights}")).expect("write");
        let mut args = ServeArgs::default();
        args.database.config = Some(path.clone());
        let config = Config::resolve(&args).expect("resolves");
        assert_eq!(config.ingest.scoring.weights.reliability, 0.4);
        assert_eq!(config.ingest.scoring.memory_limit_mb, 1024.0);

        std::fs::write(&path, format!("[scoring]\n{}", weights.replace("0.4", "0.9"))).expect("write");
        let err = Config::resolve(&args).expect_err("weights must sum to 1");
        assert!(err.contains("scoring"), "{err}");
    }

    #[test]
    fn the_admission_wait_is_configurable_and_bounded() {
        assert_eq!(
            Config::resolve(&ServeArgs::default()).expect("resolves").ingest.admission_wait,
            DEFAULT_ADMISSION_WAIT
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wait.toml");
        std::fs::write(&path, "admission_wait_ms = 250\n").expect("write");
        let mut args = ServeArgs::default();
        args.database.config = Some(path.clone());
        assert_eq!(Config::resolve(&args).expect("resolves").ingest.admission_wait, Duration::from_millis(250));
        args.admission_wait_ms = Some(0);
        assert_eq!(Config::resolve(&args).expect("flag beats file").ingest.admission_wait, Duration::ZERO);
        args.admission_wait_ms = Some(60_000);
        let err = Config::resolve(&args).expect_err("a minute is too long");
        assert!(err.contains("admission_wait_ms"), "{err}");
    }

    #[test]
    fn defaults() {
        let config = Config::resolve(&ServeArgs::default()).expect("resolves");
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.database_url, DEFAULT_DATABASE_URL);
        assert!(config.migrate);
    }
}
