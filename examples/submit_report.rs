//! A Rust worker reporting one run with the typed client:
//! `cargo run --example submit_report -- 127.0.0.1:50051` against a running `runwarden serve`.

use std::time::Instant;

use runwarden::client::{Client, DataVerification, ExecutionReport, Outcome};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:50051".into());
    let started = Instant::now();
    // ... the worker's real job would run here ...
    let processed = 120;

    let mut client = Client::connect(&addr).await?;
    let ack = client
        .submit(ExecutionReport {
            worker_name: "example_rust_worker".into(),
            worker_type: "example".into(),
            outcome: Outcome::Success as i32,
            duration_ms: Some(started.elapsed().as_millis() as i64),
            data_verification: Some(DataVerification {
                records_fetched: processed,
                records_processed: processed,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    println!("stored {} with overall score {:.1}", ack.execution_id, ack.scores.map_or(0.0, |s| s.overall));
    Ok(())
}
