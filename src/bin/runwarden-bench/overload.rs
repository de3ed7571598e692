//! `runwarden-bench overload`: latency (unary, 64 in flight) and capacity (unary, 256 in flight)
//! first, then a flood far above it
//! (`--in-flight`, default 2,000 callers that never back off) against a server whose writer
//! queue holds 256 reports. Reports how much was shed (RESOURCE_EXHAUSTED) and how fast, the
//! throughput of what was admitted as a ratio of capacity, peak RSS, and p99 once the flood
//! stops against p99 before it. Capacity is measured again after the flood, and the admitted
//! rate compared with the mean of the two.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use runwarden::proto::v1::{SubmitReportRequest, report_service_client::ReportServiceClient};
use tonic::transport::Channel;

use crate::ingest::{ServerProcess, Shape, measure, sample_report};

/// Where the load generator runs relative to the server.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Generator {
    /// Both share both cores at the same priority.
    Shared,
    /// The generator at nice 19: the server gets the CPU first.
    Nice,
    /// The server on core 1, the generator on core 0 (`taskset`): callers on other machines.
    SplitCores,
}

pub async fn run(
    binary: &str,
    in_flight: usize,
    connections: usize,
    seconds: u64,
    generator: Generator,
    admission_wait_ms: Option<u64>,
) {
    let dir = std::env::temp_dir().join(format!("runwarden-overload-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite://{}/overload.db?mode=rwc", dir.display());
    let wait = admission_wait_ms.map(|ms| ms.to_string());
    let mut args = vec!["--log-format", "json", "serve", "--listen", "127.0.0.1:0", "--queue-capacity", "256"];
    if let Some(wait) = &wait {
        args.extend(["--admission-wait-ms", wait.as_str()]);
    }
    args.extend(["--database", url.as_str()]);
    let server = if generator == Generator::SplitCores {
        let pinned: Vec<&str> = ["-c", "1", binary].into_iter().chain(args.iter().copied()).collect();
        ServerProcess::start("taskset", &pinned)
    } else {
        ServerProcess::start(binary, &args)
    };
    // The callers of a real flood run on other machines: give the server the CPU first (or a core
    // of its own), in the capacity measurement and in the flood alike, so the ratio is the
    // server's own.
    match generator {
        Generator::Shared => {}
        Generator::Nice => for_each_own_thread("renice", &["-n", "19", "-p"]),
        Generator::SplitCores => for_each_own_thread("taskset", &["-p", "-c", "0"]),
    }
    let before = measure("latency baseline", &server, Shape::Unary, 64, Duration::from_secs(10)).await;
    // Capacity: the writer's throughput with enough callers to keep its batches full.
    let capacity = measure("capacity", &server, Shape::Unary, 256, Duration::from_secs(10)).await.rate();
    let rss_before = server.peak_rss_mb();

    let admitted = Arc::new(AtomicU64::new(0));
    let shed = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let shed_latency_us = Arc::new(std::sync::Mutex::new(Vec::new()));
    let admitted_latency_us = Arc::new(std::sync::Mutex::new(Vec::new()));
    // Several connections, as many clients would open.
    let mut channels = Vec::new();
    for _ in 0..connections.max(1) {
        channels.push(
            Channel::from_shared(format!("http://{}", server.addr)).expect("uri").connect().await.expect("connect"),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..in_flight {
        let mut client = ReportServiceClient::new(channels[t % channels.len()].clone());
        let (admitted, shed, other, shed_latency_us, admitted_latency_us) =
            (admitted.clone(), shed.clone(), other.clone(), shed_latency_us.clone(), admitted_latency_us.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = (t as u64 + 1) * 20_000_000_000;
            let mut local = Vec::new();
            let mut local_ok = Vec::new();
            while Instant::now() < deadline {
                i += 1;
                let call = Instant::now();
                match client.submit_report(SubmitReportRequest { report: Some(sample_report(i)) }).await {
                    Ok(_) => {
                        admitted.fetch_add(1, Ordering::Relaxed);
                        local_ok.push(call.elapsed().as_micros() as u64);
                    }
                    Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                        shed.fetch_add(1, Ordering::Relaxed);
                        local.push(call.elapsed().as_micros() as u64);
                    }
                    Err(s) => {
                        if other.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("other error: {:?}: {}", s.code(), s.message());
                        }
                    }
                }
            }
            if let Ok(mut all) = shed_latency_us.lock() {
                all.extend(local);
            }
            if let Ok(mut all) = admitted_latency_us.lock() {
                all.extend(local_ok);
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let flood_secs = started.elapsed().as_secs_f64();
    let peak_rss = server.peak_rss_mb();
    let after = measure("after", &server, Shape::Unary, 64, Duration::from_secs(5)).await;
    // Capacity again, on the database the flood left: ingest slows as the table grows (random
    // execution ids), so the flood is judged against the mean of the capacity on either side.
    let capacity_after = measure("capacity after", &server, Shape::Unary, 256, Duration::from_secs(10)).await.rate();
    let bracket = (capacity + capacity_after) / 2.0;
    let mut shed_us = std::mem::take(&mut *shed_latency_us.lock().expect("lock"));
    shed_us.sort_unstable();
    let shed_p99 = quantile_ms(&shed_us, 0.99);
    let mut admitted_us = std::mem::take(&mut *admitted_latency_us.lock().expect("lock"));
    admitted_us.sort_unstable();
    let admitted_rate = admitted.load(Ordering::Relaxed) as f64 / flood_secs;
    println!("| | figure |\n|---|---|");
    println!(
        "| before the flood (unary, 64 in flight) | {:.0} reports/s, p99 {:.2} ms |",
        before.rate(),
        ms(before.quantile(0.99))
    );
    println!(
        "| capacity (unary, 256 in flight) | {capacity:.0} reports/s before the flood, {capacity_after:.0} after |"
    );
    println!(
        "| flood | {in_flight} callers without backoff for {flood_secs:.0} s, {connections} connections, admission wait {}{} |",
        wait.as_deref().map_or("default".to_owned(), |ms| format!("{ms} ms")),
        match generator {
            Generator::Shared => "",
            Generator::Nice => ", load generator at nice 19",
            Generator::SplitCores => ", server on core 1, load generator on core 0",
        }
    );
    println!(
        "| admitted during the flood | {admitted_rate:.0} reports/s = {:.2} x the capacity around it ({:.2} x the one before) |",
        admitted_rate / bracket.max(1.0),
        admitted_rate / capacity.max(1.0)
    );
    println!(
        "| admitted calls' latency during the flood | p50 {:.2} ms, p99 {:.2} ms |",
        quantile_ms(&admitted_us, 0.5),
        quantile_ms(&admitted_us, 0.99)
    );
    println!("| shed (RESOURCE_EXHAUSTED) | {} calls, p99 answer {shed_p99:.2} ms |", shed.load(Ordering::Relaxed));
    println!("| other errors | {} |", other.load(Ordering::Relaxed));
    println!("| peak RSS | {rss_before:.1} MB before the flood, {peak_rss:.1} MB after |");
    println!(
        "| after the flood (5 s, 64 in flight) | {:.0} reports/s, p99 {:.2} ms ({:.2} x the p99 before) |",
        after.rate(),
        ms(after.quantile(0.99)),
        after.quantile(0.99).as_secs_f64() / before.quantile(0.99).as_secs_f64().max(1e-9)
    );
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `q` quantile of sorted microseconds, in milliseconds.
fn quantile_ms(sorted_us: &[u64], q: f64) -> f64 {
    let index = ((sorted_us.len().max(1) - 1) as f64 * q) as usize;
    sorted_us.get(index).copied().unwrap_or(0) as f64 / 1000.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `command args… TID` for every thread of this process (the load generator; the server was
/// started before and keeps its own settings). Linux applies nice and CPU affinity per thread;
/// threads started later inherit them.
fn for_each_own_thread(command: &str, args: &[&str]) {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return };
    let tids: Vec<String> = tasks.filter_map(|t| t.ok()?.file_name().into_string().ok()).collect();
    let ok = tids.iter().all(|tid| {
        std::process::Command::new(command)
            .args(args)
            .arg(tid)
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !ok {
        eprintln!("warning: `{command} {}` failed for some thread; measuring without it", args.join(" "));
    }
}
