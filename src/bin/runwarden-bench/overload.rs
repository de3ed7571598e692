//! `runwarden-bench overload`: latency (unary, 64 in flight) and capacity (unary, 256 in flight)
//! first, then a flood far above it
//! (`--in-flight`, default 2,000 callers that never back off) against a server whose writer
//! queue holds 256 reports. Reports how much was shed (RESOURCE_EXHAUSTED) and how fast, the
//! throughput of what was admitted as a ratio of capacity, peak RSS, and p99 once the flood
//! stops against p99 before it.

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

pub async fn run(binary: &str, in_flight: usize, seconds: u64, nice_generator: bool) {
    let dir = std::env::temp_dir().join(format!("runwarden-overload-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite://{}/overload.db?mode=rwc", dir.display());
    let server = ServerProcess::start(
        binary,
        &["--log-format", "json", "serve", "--listen", "127.0.0.1:0", "--queue-capacity", "256", "--database", &url],
    );
    if nice_generator {
        // The callers of a real flood run on other machines: give the server the CPU first, in
        // the capacity measurement and in the flood alike, so the ratio is the server's own.
        lower_own_priority();
    }
    let before = measure("latency baseline", &server, Shape::Unary, 64, Duration::from_secs(10)).await;
    // Capacity: the writer's throughput with enough callers to keep its batches full.
    let capacity = measure("capacity", &server, Shape::Unary, 256, Duration::from_secs(10)).await.rate();
    let rss_before = server.peak_rss_mb();

    let admitted = Arc::new(AtomicU64::new(0));
    let shed = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let shed_latency_us = Arc::new(std::sync::Mutex::new(Vec::new()));
    // Several connections, as many clients would open.
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(
            Channel::from_shared(format!("http://{}", server.addr)).expect("uri").connect().await.expect("connect"),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..in_flight {
        let mut client = ReportServiceClient::new(channels[t % channels.len()].clone());
        let (admitted, shed, other, shed_latency_us) =
            (admitted.clone(), shed.clone(), other.clone(), shed_latency_us.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = (t as u64 + 1) * 20_000_000_000;
            let mut local = Vec::new();
            while Instant::now() < deadline {
                i += 1;
                let call = Instant::now();
                match client.submit_report(SubmitReportRequest { report: Some(sample_report(i)) }).await {
                    Ok(_) => {
                        admitted.fetch_add(1, Ordering::Relaxed);
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
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let flood_secs = started.elapsed().as_secs_f64();
    let peak_rss = server.peak_rss_mb();
    let after = measure("after", &server, Shape::Unary, 64, Duration::from_secs(5)).await;
    let mut shed_us = std::mem::take(&mut *shed_latency_us.lock().expect("lock"));
    shed_us.sort_unstable();
    let shed_p99 = shed_us.get((shed_us.len().max(1) - 1) * 99 / 100).copied().unwrap_or(0) as f64 / 1000.0;
    let admitted_rate = admitted.load(Ordering::Relaxed) as f64 / flood_secs;
    println!("| | figure |\n|---|---|");
    println!(
        "| before the flood (unary, 64 in flight) | {:.0} reports/s, p99 {:.2} ms |",
        before.rate(),
        ms(before.quantile(0.99))
    );
    println!("| capacity (unary, 256 in flight) | {capacity:.0} reports/s |");
    println!(
        "| flood | {in_flight} callers without backoff for {flood_secs:.0} s, 8 connections{} |",
        if nice_generator { ", load generator at nice 19" } else { "" }
    );
    println!(
        "| admitted during the flood | {admitted_rate:.0} reports/s = {:.2} x capacity |",
        admitted_rate / capacity.max(1.0)
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Moves every thread of this process (the load generator; the server was started before and
/// keeps its priority) to nice 19. Linux applies nice per thread; threads started later inherit it.
fn lower_own_priority() {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return };
    let tids: Vec<String> = tasks.filter_map(|t| t.ok()?.file_name().into_string().ok()).collect();
    let status = std::process::Command::new("renice").args(["-n", "19", "-p"]).args(&tids).output();
    if !status.is_ok_and(|s| s.status.success()) {
        eprintln!("warning: could not renice the load generator; measuring at equal priority");
    }
}
