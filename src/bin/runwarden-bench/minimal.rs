//! `runwarden-bench minimal-server`: the issue's own reference design — "a minimal tonic server
//! with a group-commit writer, SQLite WAL synchronous=FULL" — built as plainly as it can be, so
//! that the ingest benchmark can measure it in the same run as runwarden and the two limits.
//!
//! It does what durable ingest cannot avoid and nothing else: decode the call (tonic), encode the
//! report for storage, hand it to one writer thread, and answer once its transaction is committed.
//! The writer owns a SQLite connection (rusqlite, on the C API: no connection thread, no
//! statement hand-offs) and commits every report waiting as one IMMEDIATE transaction of
//! single-row INSERTs through one prepared statement. No validation, scoring, worker state,
//! rollups, anomalies or indexes beyond the execution id's: what runwarden reaches of this
//! server's rate is what its own work per report leaves of the design's limit.

use std::{path::Path, sync::mpsc, time::Duration};

use prost::Message;
use runwarden::proto::v1::{
    ExecutionReport, SubmitReportBatchRequest, SubmitReportRequest, SubmitReportResponse, SubmitReportsResponse,
    report_service_server::{ReportService, ReportServiceServer},
};
use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

/// Most reports in one transaction (runwarden's writer takes up to 2,000 as well).
const MAX_GROUP: usize = 2000;

/// One report on its way to the writer, and who to tell once it is committed.
struct Job {
    row: Row,
    /// `true` stored, `false` already stored (a duplicate execution id); dropped unanswered if
    /// the transaction failed.
    ack: oneshot::Sender<bool>,
}

/// The columns a report is stored as.
struct Row {
    execution_id: String,
    worker_name: String,
    outcome: i32,
    started_at_us: i64,
    completed_at_us: i64,
    duration_ms: i64,
    records_processed: i64,
    received_at_us: i64,
    report: Vec<u8>,
}

impl Row {
    fn of(report: &ExecutionReport) -> Row {
        let micros = |t: &Option<pbjson_types::Timestamp>| {
            t.as_ref().map_or(0, |t| t.seconds.saturating_mul(1_000_000).saturating_add(i64::from(t.nanos / 1000)))
        };
        Row {
            execution_id: report.execution_id.clone(),
            worker_name: report.worker_name.clone(),
            outcome: report.outcome,
            started_at_us: micros(&report.started_at),
            completed_at_us: micros(&report.completed_at),
            duration_ms: report.duration_ms.unwrap_or_default(),
            records_processed: report.data_verification.as_ref().map_or(0, |d| d.records_processed),
            received_at_us: chrono::Utc::now().timestamp_micros(),
            report: report.encode_to_vec(),
        }
    }
}

/// The group-commit writer on its own thread.
struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    fn spawn(path: &Path) -> Result<Writer, String> {
        Self::start(path).map_err(|e| format!("cannot open {}: {e}", path.display()))
    }

    fn start(path: &Path) -> Result<Writer, Box<dyn std::error::Error>> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS reports (
                id INTEGER PRIMARY KEY,
                execution_id TEXT NOT NULL UNIQUE,
                worker_name TEXT NOT NULL,
                outcome INTEGER NOT NULL,
                started_at_us INTEGER NOT NULL,
                completed_at_us INTEGER NOT NULL,
                duration_ms INTEGER NOT NULL,
                records_processed INTEGER NOT NULL,
                received_at_us INTEGER NOT NULL,
                report BLOB NOT NULL
            )",
        )?;
        let (jobs, waiting) = mpsc::channel::<Job>();
        std::thread::Builder::new().name("minimal-writer".into()).spawn(move || write(conn, waiting))?;
        Ok(Writer { jobs })
    }

    /// Queues `row`; the receiver answers once it is committed (or is dropped if it was not).
    fn submit(&self, row: Row) -> oneshot::Receiver<bool> {
        let (ack, done) = oneshot::channel();
        // A send fails only once the writer has stopped; the dropped `ack` then answers the caller.
        let _ = self.jobs.send(Job { row, ack });
        done
    }
}

/// Takes every report waiting (up to [`MAX_GROUP`]), stores them in one transaction, answers
/// them, and starts again with what arrived meanwhile.
fn write(mut conn: Connection, waiting: mpsc::Receiver<Job>) {
    while let Ok(first) = waiting.recv() {
        let group: Vec<Job> = std::iter::once(first).chain(waiting.try_iter().take(MAX_GROUP - 1)).collect();
        match commit(&mut conn, &group) {
            Ok(stored) => {
                for (job, stored) in group.into_iter().zip(stored) {
                    let _ = job.ack.send(stored);
                }
            }
            // Callers see their acks dropped: UNAVAILABLE, nothing acknowledged.
            Err(e) => eprintln!("minimal-server: transaction failed: {e}"),
        }
    }
}

fn commit(conn: &mut Connection, group: &[Job]) -> rusqlite::Result<Vec<bool>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut stored = Vec::with_capacity(group.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO reports (execution_id, worker_name, outcome, started_at_us, completed_at_us, duration_ms,
                records_processed, received_at_us, report)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (execution_id) DO NOTHING",
        )?;
        for Job { row, .. } in group {
            let inserted = insert.execute(params![
                row.execution_id,
                row.worker_name,
                row.outcome,
                row.started_at_us,
                row.completed_at_us,
                row.duration_ms,
                row.records_processed,
                row.received_at_us,
                row.report,
            ])?;
            stored.push(inserted == 1);
        }
    }
    tx.commit()?;
    Ok(stored)
}

fn not_stored() -> Status {
    Status::unavailable("report was not stored; retry")
}

struct MinimalService {
    writer: Writer,
}

/// Waits for every queued report of a call: how many were stored and how many were duplicates.
async fn answers(waiting: Vec<oneshot::Receiver<bool>>) -> Result<SubmitReportsResponse, Status> {
    let mut response = SubmitReportsResponse::default();
    for done in waiting {
        if done.await.map_err(|_| not_stored())? {
            response.accepted += 1;
        } else {
            response.duplicates += 1;
        }
    }
    Ok(response)
}

#[tonic::async_trait]
impl ReportService for MinimalService {
    async fn submit_report(
        &self,
        request: Request<SubmitReportRequest>,
    ) -> Result<Response<SubmitReportResponse>, Status> {
        let report = request.into_inner().report.ok_or_else(|| Status::invalid_argument("report: required"))?;
        let execution_id = report.execution_id.clone();
        let stored = self.writer.submit(Row::of(&report)).await.map_err(|_| not_stored())?;
        Ok(Response::new(SubmitReportResponse { execution_id, duplicate: !stored, ..Default::default() }))
    }

    async fn submit_reports(
        &self,
        request: Request<tonic::Streaming<SubmitReportRequest>>,
    ) -> Result<Response<SubmitReportsResponse>, Status> {
        let mut stream = request.into_inner();
        let mut waiting = Vec::new();
        while let Some(message) = stream.message().await? {
            if let Some(report) = message.report {
                waiting.push(self.writer.submit(Row::of(&report)));
            }
        }
        Ok(Response::new(answers(waiting).await?))
    }

    async fn submit_report_batch(
        &self,
        request: Request<SubmitReportBatchRequest>,
    ) -> Result<Response<SubmitReportsResponse>, Status> {
        let waiting = request.into_inner().reports.iter().map(|report| self.writer.submit(Row::of(report))).collect();
        Ok(Response::new(answers(waiting).await?))
    }
}

/// Serves the minimal server on `listen`, storing into the SQLite file `database`; prints
/// `addr=…` once listening.
pub async fn serve(listen: std::net::SocketAddr, database: &Path) {
    let writer = Writer::spawn(database).unwrap_or_else(|e| panic!("{e}"));
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
    println!("addr={}", listener.local_addr().expect("addr"));
    tonic::transport::Server::builder()
        .add_service(ReportServiceServer::new(MinimalService { writer }).max_decoding_message_size(64 << 20))
        .serve_with_incoming(crate::ingest::incoming(listener))
        .await
        .expect("minimal server");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> (Job, oneshot::Receiver<bool>) {
        let report = ExecutionReport { execution_id: id.into(), worker_name: "w".into(), ..Default::default() };
        let (ack, done) = oneshot::channel();
        (Job { row: Row::of(&report), ack }, done)
    }

    #[test]
    fn a_group_is_stored_once_and_duplicates_are_told() {
        let dir = std::env::temp_dir().join(format!("minimal-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("m.db");
        let Writer { jobs } = Writer::spawn(&path).expect("open");
        let mut waiting = Vec::new();
        for id in ["a", "b", "a"] {
            let (job, done) = job(id);
            jobs.send(job).expect("send");
            waiting.push(done);
        }
        let answers: Vec<bool> = waiting.into_iter().map(|done| done.blocking_recv().expect("answered")).collect();
        assert_eq!(answers, [true, true, false]);
        drop(jobs);
        let conn = Connection::open(&path).expect("reopen");
        let (rows, blobs): (i64, i64) = conn
            .query_row("SELECT count(*), sum(length(report) > 0) FROM reports", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("count");
        assert_eq!((rows, blobs), (2, 2));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
