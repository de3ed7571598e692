//! `runwarden exec --worker NAME -- COMMAND ARGS...`: the cron wrapper. Runs the command with its
//! stdout and stderr passed through, measures it (duration, peak RSS and CPU of the child), maps
//! its exit to an outcome (0 SUCCESS, killed by `--timeout` TIMEOUT, anything else FAILED with the
//! tail of its stderr as `error_message`), merges the metrics the command wrote as JSON to the file
//! named by `$RUNWARDEN_METRICS_FILE` (the report's own field names, e.g.
//! `{"data_verification": {"records_processed": 120}}`), and submits the report. The wrapper
//! exits with the command's exit code whatever happens to the report: reporting never fails the
//! job. Retries reuse the same `execution_id`, so a retried report is never counted twice.

use std::{
    collections::VecDeque,
    process::Stdio,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    process::Command,
};

use crate::{
    client::Client,
    config::ExecArgs,
    domain::validation::to_timestamp,
    proto::v1::{ExecutionReport, Outcome, ResourceMetrics},
};

/// How much of the command's stderr is kept for `error_message`.
pub const STDERR_TAIL_BYTES: usize = 4 * 1024;
/// Exit code when the command was killed by `--timeout` (as `timeout(1)` does).
pub const TIMEOUT_EXIT: i32 = 124;
/// Exit code when the command could not be started.
pub const NOT_STARTED_EXIT: i32 = 127;
/// Report submission attempts.
const ATTEMPTS: u32 = 3;

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    NotStarted(String),
}

impl Ending {
    /// The wrapper's own exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            Ending::Exited(code) => *code,
            Ending::Signaled(signal) => 128 + signal,
            Ending::TimedOut => TIMEOUT_EXIT,
            Ending::NotStarted(_) => NOT_STARTED_EXIT,
        }
    }

    pub fn outcome(&self) -> Outcome {
        match self {
            Ending::Exited(0) => Outcome::Success,
            Ending::TimedOut => Outcome::Timeout,
            _ => Outcome::Failed,
        }
    }
}

/// What was measured about one run of the command.
#[derive(Debug, Clone)]
pub struct Measured {
    pub ending: Ending,
    pub started_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    pub stderr_tail: String,
    pub peak_rss_mb: Option<f64>,
    pub cpu_percent: Option<f64>,
}

/// The report for a measured run: the metrics the command wrote (if any) as the base, then what
/// the wrapper knows for certain (identity, timing, outcome; memory and CPU unless the command
/// reported its own).
pub fn build_report(
    worker: &str,
    worker_type: &str,
    execution_id: &str,
    measured: &Measured,
    written: Option<ExecutionReport>,
) -> ExecutionReport {
    let mut report = written.unwrap_or_default();
    report.worker_name = worker.to_owned();
    if !worker_type.is_empty() {
        report.worker_type = worker_type.to_owned();
    }
    report.execution_id = execution_id.to_owned();
    report.started_at = Some(to_timestamp(measured.started_at));
    report.completed_at = Some(to_timestamp(measured.completed_at));
    report.duration_ms = Some((measured.completed_at - measured.started_at).num_milliseconds().max(0));
    report.outcome = measured.ending.outcome() as i32;
    if report.outcome != Outcome::Success as i32 && report.error_message.is_empty() {
        let why = match &measured.ending {
            Ending::Exited(code) => format!("exit code {code}"),
            Ending::Signaled(signal) => format!("killed by signal {signal}"),
            Ending::TimedOut => "timed out".to_owned(),
            Ending::NotStarted(why) => format!("could not start: {why}"),
        };
        let tail = measured.stderr_tail.trim();
        report.error_message = if tail.is_empty() { why } else { format!("{why}; stderr: {tail}") };
    }
    let resources = report.resource_metrics.get_or_insert_with(ResourceMetrics::default);
    if resources.memory_peak_mb.is_none() {
        resources.memory_peak_mb = measured.peak_rss_mb;
    }
    if resources.cpu_percent_avg.is_none() {
        resources.cpu_percent_avg = measured.cpu_percent;
    }
    report
}

/// The last `STDERR_TAIL_BYTES` of what was written, on a character boundary.
fn tail_text(bytes: &VecDeque<u8>) -> String {
    let (a, b) = bytes.as_slices();
    let joined = [a, b].concat();
    let text = String::from_utf8_lossy(&joined);
    text.trim_start_matches('\u{FFFD}').to_owned()
}

/// Runs the command and reports it; returns the exit code the wrapper should exit with.
pub async fn run(args: ExecArgs) -> i32 {
    let execution_id = uuid::Uuid::now_v7().to_string();
    let metrics_file = std::env::temp_dir().join(format!("runwarden-metrics-{execution_id}.json"));
    let measured = run_command(&args, &metrics_file, &execution_id).await;
    let written = read_metrics(&metrics_file);
    let _ = std::fs::remove_file(&metrics_file);
    let report = build_report(&args.worker, &args.worker_type, &execution_id, &measured, written);
    submit(&args, report).await;
    measured.ending.exit_code()
}

async fn run_command(args: &ExecArgs, metrics_file: &std::path::Path, execution_id: &str) -> Measured {
    let started_at = Utc::now();
    let clock = Instant::now();
    let before = children_usage();
    let Some((program, rest)) = args.command.split_first() else {
        return not_started(started_at, "no command given".into());
    };
    let mut child = match Command::new(program)
        .args(rest)
        .env("RUNWARDEN_METRICS_FILE", metrics_file)
        .env("RUNWARDEN_EXECUTION_ID", execution_id)
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("runwarden exec: cannot start {program:?}: {e}");
            return not_started(started_at, format!("{program}: {e}"));
        }
    };
    // Pass stderr through while keeping its tail.
    let stderr = child.stderr.take();
    let tail_task = tokio::spawn(async move {
        let mut tail = VecDeque::with_capacity(STDERR_TAIL_BYTES);
        let Some(mut stderr) = stderr else { return tail };
        let mut out = tokio::io::stderr();
        let mut buf = [0u8; 8192];
        loop {
            match stderr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let _ = out.write_all(&buf[..n]).await;
                    for &b in &buf[..n] {
                        if tail.len() == STDERR_TAIL_BYTES {
                            tail.pop_front();
                        }
                        tail.push_back(b);
                    }
                }
            }
        }
        let _ = out.flush().await;
        tail
    });
    let waited = match args.timeout {
        Some(secs) => match tokio::time::timeout(Duration::from_secs(secs), child.wait()).await {
            Ok(status) => status.map(Some),
            Err(_) => {
                let _ = child.kill().await;
                Ok(None)
            }
        },
        None => child.wait().await.map(Some),
    };
    let ending = match waited {
        Ok(Some(status)) => match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
            (Some(code), _) => Ending::Exited(code),
            (None, Some(signal)) => Ending::Signaled(signal),
            (None, None) => Ending::Exited(1),
        },
        Ok(None) => Ending::TimedOut,
        Err(e) => Ending::NotStarted(format!("waiting for {program}: {e}")),
    };
    let elapsed = clock.elapsed();
    let stderr_tail = tail_task.await.map(|t| tail_text(&t)).unwrap_or_default();
    let after = children_usage();
    let (peak_rss_mb, cpu_percent) = match (before, after) {
        (Some((_, cpu_before)), Some((max_rss_kb, cpu_after))) => {
            let wall = elapsed.as_secs_f64();
            let cpu = if wall > 0.0 { Some(((cpu_after - cpu_before) / wall * 100.0).max(0.0)) } else { None };
            (Some(max_rss_kb as f64 / 1024.0), cpu)
        }
        _ => (None, None),
    };
    Measured { ending, started_at, completed_at: Utc::now(), stderr_tail, peak_rss_mb, cpu_percent }
}

fn not_started(at: DateTime<Utc>, why: String) -> Measured {
    Measured {
        ending: Ending::NotStarted(why),
        started_at: at,
        completed_at: Utc::now(),
        stderr_tail: String::new(),
        peak_rss_mb: None,
        cpu_percent: None,
    }
}

/// (max RSS of any waited-for child in KiB, their user + system CPU seconds).
fn children_usage() -> Option<(i64, f64)> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).ok()?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Some((usage.max_rss(), secs(usage.user_time()) + secs(usage.system_time())))
}

/// The report fields the command wrote, if it wrote any. A file that does not parse is reported on
/// stderr and ignored (the run is still reported).
fn read_metrics(path: &std::path::Path) -> Option<ExecutionReport> {
    let text = std::fs::read_to_string(path).ok()?;
    if text.trim().is_empty() {
        return None;
    }
    match serde_json::from_str::<ExecutionReport>(&text) {
        Ok(report) => Some(report),
        Err(e) => {
            eprintln!("runwarden exec: ignoring {}: not an ExecutionReport in JSON: {e}", path.display());
            None
        }
    }
}

async fn submit(args: &ExecArgs, report: ExecutionReport) {
    let timeout = Duration::from_secs(args.report_timeout.max(1));
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=ATTEMPTS {
        let options = crate::client::ClientOptions {
            timeout,
            token: args.token.clone(),
            ca_cert: args.ca_cert.clone(),
            identity: None,
        };
        let result = match Client::connect_with(&args.addr, &options).await {
            Ok(mut client) => client.submit(report.clone()).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => return,
            Err(crate::client::ClientError::Status(status))
                if matches!(
                    status.code(),
                    tonic::Code::InvalidArgument | tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                ) =>
            {
                eprintln!("runwarden exec: the report was refused: {}", status.message());
                return;
            }
            Err(e) if attempt == ATTEMPTS => {
                eprintln!("runwarden exec: could not report to {} after {ATTEMPTS} attempts: {e}", args.addr);
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::DataVerification;

    fn measured(ending: Ending, stderr: &str) -> Measured {
        let started_at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        Measured {
            ending,
            started_at,
            completed_at: started_at + chrono::TimeDelta::milliseconds(1500),
            stderr_tail: stderr.into(),
            peak_rss_mb: Some(42.0),
            cpu_percent: Some(12.5),
        }
    }

    #[test]
    fn exit_codes_map_to_outcomes() {
        assert_eq!((Ending::Exited(0).outcome(), Ending::Exited(0).exit_code()), (Outcome::Success, 0));
        assert_eq!((Ending::Exited(3).outcome(), Ending::Exited(3).exit_code()), (Outcome::Failed, 3));
        assert_eq!((Ending::TimedOut.outcome(), Ending::TimedOut.exit_code()), (Outcome::Timeout, 124));
        assert_eq!((Ending::Signaled(9).outcome(), Ending::Signaled(9).exit_code()), (Outcome::Failed, 137));
        assert_eq!(Ending::NotStarted("x".into()).exit_code(), 127);
    }

    #[test]
    fn the_wrapper_knows_timing_and_outcome_and_keeps_what_the_command_wrote() {
        let written = ExecutionReport {
            worker_name: "ignored".into(),
            outcome: Outcome::Success as i32,
            data_verification: Some(DataVerification { records_processed: 120, ..Default::default() }),
            resource_metrics: Some(ResourceMetrics { memory_peak_mb: Some(300.0), ..Default::default() }),
            ..Default::default()
        };
        let report =
            build_report("nightly_export", "cron", "id-1", &measured(Ending::Exited(2), "boom\n"), Some(written));
        assert_eq!((report.worker_name.as_str(), report.execution_id.as_str()), ("nightly_export", "id-1"));
        assert_eq!((report.outcome, report.duration_ms), (Outcome::Failed as i32, Some(1500)));
        assert_eq!(report.error_message, "exit code 2; stderr: boom");
        assert_eq!(report.data_verification.unwrap().records_processed, 120);
        let resources = report.resource_metrics.unwrap();
        assert_eq!((resources.memory_peak_mb, resources.cpu_percent_avg), (Some(300.0), Some(12.5)));
    }

    #[test]
    fn a_success_has_no_error_message_and_measured_resources() {
        let report = build_report("w", "", "id", &measured(Ending::Exited(0), "warnings only"), None);
        assert_eq!((report.outcome, report.error_message.as_str()), (Outcome::Success as i32, ""));
        assert_eq!(report.resource_metrics.unwrap().memory_peak_mb, Some(42.0));
    }

    #[test]
    fn the_stderr_tail_keeps_whole_characters() {
        let mut tail: VecDeque<u8> = "é".repeat(3000).into_bytes().into_iter().collect();
        while tail.len() > STDERR_TAIL_BYTES {
            tail.pop_front();
        }
        tail.pop_front(); // now starts mid-character
        let text = tail_text(&tail);
        assert!(text.chars().all(|c| c == 'é'), "{}", &text[..10]);
    }
}
