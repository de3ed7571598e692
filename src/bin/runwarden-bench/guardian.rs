//! `runwarden-bench guardian`: the stream guardian at scale. A runwarden server (child process, fresh
//! SQLite file, tick every `--tick-seconds`) tracks `--streams` streams opened over gRPC; the bench
//! then measures, in one run:
//! - report ingest alone (unary, 64 in flight) — the baseline;
//! - the same ingest while `--heartbeats` heartbeats per second go to random streams, one Heartbeat
//!   call each, with the heartbeat latency p50/p99;
//! - the same again with the heartbeats sent as HeartbeatBatch calls of `--batch` ids (as a process
//!   holding many streams sends them), the same number per second;
//! - every guardian tick's duration over 100 k streams (from GetGuardianStatus), and the server's
//!   peak RSS.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use runwarden::proto::v1::{
    GetGuardianStatusRequest, HeartbeatBatchRequest, HeartbeatRequest, OpenStreamRequest,
    guardian_service_client::GuardianServiceClient,
};
use tokio::sync::Mutex;
use tonic::transport::Channel;

use super::{
    Rng,
    ingest::{Run, ServerProcess, Shape, http_get, measure, metric_value},
    ms, runwarden_binary, tempfile_dir,
};

const TYPES: [&str; 5] = ["generation", "coach_start", "coach_continue", "profile_start", "profile_continue"];

pub async fn run(
    streams: usize,
    heartbeats_per_sec: u64,
    batch: usize,
    rounds: usize,
    seconds: u64,
    tick_seconds: f64,
    flush_seconds: f64,
) {
    let dir = tempfile_dir();
    let url = format!("sqlite://{}/guardian.db?mode=rwc", dir.display());
    let config = dir.join("runwarden.toml");
    // Streams stay healthy for the whole run, so every tick classifies all of them.
    std::fs::write(
        &config,
        format!(
            "[guardian]\ntick_interval_seconds = {tick_seconds}\nheartbeat_flush_seconds = {flush_seconds}\n\
             stale_after_seconds = 3600\norphan_after_seconds = 7200\n"
        ),
    )
    .expect("config");
    let server = ServerProcess::start(
        &runwarden_binary(),
        &[
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database",
            &url,
            "--config",
            config.to_str().expect("utf-8 path"),
        ],
    );
    let channel =
        Channel::from_shared(format!("http://{}", server.addr)).expect("uri").connect().await.expect("connect");
    let guardian = GuardianServiceClient::new(channel);

    let started = Instant::now();
    let ids = open_streams(&guardian, streams).await;
    let open_secs = started.elapsed().as_secs_f64();
    println!("opened {} streams in {open_secs:.1} s ({:.0}/s)", ids.len(), ids.len() as f64 / open_secs);
    // Let at least two ticks run over the full set before measuring.
    tokio::time::sleep(Duration::from_secs_f64(tick_seconds * 2.5)).await;

    let window = Duration::from_secs(seconds);
    let ticks = Arc::new(Mutex::new(Vec::new()));
    let watcher =
        tokio::spawn(collect_ticks(guardian.clone(), ticks.clone(), Duration::from_secs_f64(tick_seconds / 4.0)));
    // Ingest alone brackets every loaded phase (A U A B A …): the rate of one 10-second phase
    // drifts by ±10 % on this machine whatever else runs, so each loaded phase is compared with
    // the mean of the two baseline phases around it.
    let ids = Arc::new(ids);
    let load_window = window + Duration::from_millis(600);
    let mut phases = vec![measure_phase("ingest alone", &server, window, None).await];
    for _ in 0..rounds.max(1) {
        for per_call in [1, batch] {
            let beats =
                tokio::spawn(heartbeat_load(guardian.clone(), ids.clone(), heartbeats_per_sec, per_call, load_window));
            let how = if per_call == 1 {
                "one Heartbeat call each".to_owned()
            } else {
                format!("HeartbeatBatch of {per_call}")
            };
            phases.push(measure_phase(&how, &server, window, Some(beats)).await);
            phases.push(measure_phase("ingest alone", &server, window, None).await);
        }
    }
    watcher.abort();
    let ticks = ticks.lock().await.clone();

    println!();
    println!(
        "| phase | ingest reports/s (p99 ms) | vs. the baselines around it | server CPU | bench client CPU | machine busy (cores) | heartbeats/s | call p50 / p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut ratios: HashMap<String, Vec<f64>> = HashMap::new();
    for (i, phase) in phases.iter().enumerate() {
        let vs = match (&phase.beats, phases.get(i.wrapping_sub(1)), phases.get(i + 1)) {
            (Some(_), Some(before), Some(after)) => {
                let ratio = phase.run.rate() / ((before.run.rate() + after.run.rate()) / 2.0);
                ratios.entry(phase.name.clone()).or_default().push(ratio);
                format!("{ratio:.3}")
            }
            _ => "-".to_owned(),
        };
        let beats = phase.beats.as_ref().map_or(("-".to_owned(), "-".to_owned()), |b| {
            (format!("{:.0}", b.rate()), format!("{} / {}", ms(b.quantile(0.5)), ms(b.quantile(0.99))))
        });
        println!(
            "| {} | {:.0} ({}) | {vs} | {} | {:.2} | {:.2} | {} | {} |",
            phase.name,
            phase.run.rate(),
            ms(phase.run.quantile(0.99)),
            phase.run.server_cpu.map_or("-".to_owned(), |c| format!("{c:.2}")),
            phase.client_cores,
            phase.machine_cores,
            beats.0,
            beats.1,
        );
    }
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!("| streams tracked | {} |", ids.len());
    let mut names: Vec<_> = ratios.keys().cloned().collect();
    names.sort();
    for name in names {
        let mut values = ratios[&name].clone();
        values.sort_by(f64::total_cmp);
        println!(
            "| ingest with / without heartbeats ({name}): worst / median of {} | {:.3} / {:.3} |",
            values.len(),
            values[0],
            values[values.len() / 2]
        );
    }
    let mut tick_ms = ticks;
    tick_ms.sort_by(f64::total_cmp);
    let q = |p: f64| tick_ms.get(((tick_ms.len().max(1) - 1) as f64 * p).round() as usize).copied().unwrap_or(0.0);
    println!("| ticks observed | {} |", tick_ms.len());
    println!(
        "| tick duration p50 / p99 / max ms | {:.1} / {:.1} / {:.1} |",
        q(0.5),
        q(0.99),
        tick_ms.last().copied().unwrap_or(0.0)
    );
    println!("| server peak RSS MB | {:.1} |", server.peak_rss_mb());
    // Where the writer's time goes: the server's own histograms.
    if let Some(text) = http_get(&server.addr, "/metrics").await {
        {
            for name in [
                "runwarden_guardian_flush_seconds",
                "runwarden_guardian_flush_wait_seconds",
                "runwarden_guardian_tick_seconds",
                "runwarden_ingest_commit_seconds",
            ] {
                let pick = |suffix: &str| {
                    metric_value(&text, &format!("{name}_{suffix}")).map_or_else(|| "-".into(), |v| v.to_string())
                };
                println!("| {name}: count / sum s | {} / {} |", pick("count"), pick("sum"));
            }
        }
    }
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// One measured phase: ingest (unary, 64 in flight) for `window`, while `beats` (if any) runs.
struct Phase {
    name: String,
    run: Run,
    client_cores: f64,
    machine_cores: f64,
    /// The heartbeats sent meanwhile, as a run (count and call latencies).
    beats: Option<Run>,
}

async fn measure_phase(
    name: &str,
    server: &ServerProcess,
    window: Duration,
    beats: Option<tokio::task::JoinHandle<(u64, Vec<Duration>)>>,
) -> Phase {
    let (machine0, client0) = (machine_busy_cores_ticks(), own_cpu_seconds());
    let run = measure(name, server, Shape::Unary, 64, window).await;
    let beats = match beats {
        Some(task) => {
            let (sent, latencies) = task.await.expect("heartbeat task");
            let elapsed = window + Duration::from_millis(600);
            Some(Run {
                name: "heartbeats".into(),
                reports: sent,
                elapsed,
                latencies,
                server_cpu: None,
                peak_rss_mb: None,
            })
        }
        None => None,
    };
    let (machine1, client1) = (machine_busy_cores_ticks(), own_cpu_seconds());
    let secs = run.elapsed.as_secs_f64();
    Phase {
        name: name.to_owned(),
        client_cores: (client1 - client0) / secs,
        machine_cores: (machine1 - machine0) / 100.0 / secs,
        run,
        beats,
    }
}

async fn open_streams(guardian: &GuardianServiceClient<Channel>, streams: usize) -> Vec<String> {
    let tasks: Vec<_> = (0..64)
        .map(|task| {
            let mut client = guardian.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                let mut i = task;
                while i < streams {
                    let request = OpenStreamRequest {
                        stream_type: TYPES[i % TYPES.len()].into(),
                        owner: format!("bench-owner-{}", i % 500),
                        ..Default::default()
                    };
                    let opened = client.open_stream(request).await.expect("open stream").into_inner();
                    ids.push(opened.stream_id);
                    i += 64;
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::with_capacity(streams);
    for task in tasks {
        ids.extend(task.await.expect("open task"));
    }
    ids
}

/// `rate` heartbeats per second for `duration` to random streams, paced by 50 senders, `batch` ids
/// per call (1: Heartbeat, more: HeartbeatBatch); returns (heartbeats sent, call latencies).
async fn heartbeat_load(
    guardian: GuardianServiceClient<Channel>,
    ids: Arc<Vec<String>>,
    rate: u64,
    batch: usize,
    duration: Duration,
) -> (u64, Vec<Duration>) {
    const SENDERS: u64 = 50;
    let batch = batch.max(1);
    let per_sender = Duration::from_secs_f64(SENDERS as f64 * batch as f64 / rate.max(1) as f64);
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..SENDERS)
        .map(|s| {
            let mut client = guardian.clone();
            let ids = ids.clone();
            tokio::spawn(async move {
                let mut rng = Rng(s + 1);
                // Senders spread over the period, as independent processes would be.
                let offset = per_sender.mul_f64(s as f64 / SENDERS as f64);
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, per_sender);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    tick.tick().await;
                    let mut pick = || ids[rng.below(ids.len() as u64) as usize].clone();
                    let call = Instant::now();
                    if batch == 1 {
                        client.heartbeat(HeartbeatRequest { stream_id: pick() }).await.expect("heartbeat");
                    } else {
                        let stream_ids = (0..batch).map(|_| pick()).collect();
                        let reply = client
                            .heartbeat_batch(HeartbeatBatchRequest { stream_ids })
                            .await
                            .expect("heartbeat batch")
                            .into_inner();
                        assert!(reply.refused.is_empty(), "heartbeats refused: {:?}", reply.refused);
                    }
                    latencies.push(call.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("heartbeat sender"));
    }
    ((all.len() * batch) as u64, all)
}

/// Records each new tick's duration.
async fn collect_ticks(mut guardian: GuardianServiceClient<Channel>, ticks: Arc<Mutex<Vec<f64>>>, every: Duration) {
    let mut last = None;
    loop {
        if let Ok(status) = guardian.get_guardian_status(GetGuardianStatusRequest {}).await {
            let status = status.into_inner();
            let at = status.at.map(|t| (t.seconds, t.nanos));
            if at.is_some() && at != last {
                last = at;
                ticks.lock().await.push(status.tick_duration_ms);
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Busy (non-idle) CPU ticks of the whole machine, from /proc/stat (100 per second per core).
fn machine_busy_cores_ticks() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    fields.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum()
}

/// This process's user + system CPU seconds.
fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}
