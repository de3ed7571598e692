//! A full disk under SQLite: the database lives on a small tmpfs the test mounts (it needs root,
//! as CI has; elsewhere it says why it is skipped). Writes fail with UNAVAILABLE while reads keep
//! working; when space returns (the tmpfs grows), writes succeed again without a restart, and
//! every acknowledged report is there.

use std::{path::Path, process::Command, time::Duration};

use runwarden::proto::v1::{ExecutionReport, ListWorkersRequest};
use tonic::Code;

use crate::helpers::{Backend, TestDatabase, report, spawn_app_with};

struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then_some(Tmpfs { dir })
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .expect("remount");
        assert!(status.success(), "remount the tmpfs");
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

fn bulky(i: usize) -> ExecutionReport {
    ExecutionReport { error_message: format!("{i}:{}", "x".repeat(7000)), ..report(&format!("disk_worker_{}", i % 5)) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_keeps_reads_and_recovers() {
    let Some(fs) = Tmpfs::mount("3m") else {
        assert!(std::env::var("CI").is_err(), "CI runs as root and can mount a tmpfs");
        eprintln!("skipping: cannot mount a tmpfs here (needs root)");
        return;
    };
    let url = format!("sqlite://{}?mode=rwc", fs.path().join("runwarden.db").display());
    let app = spawn_app_with(TestDatabase::borrowed(&url), |_| {}).await;
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..2000 {
        let sent = bulky(i);
        match app.submit(sent.clone()).await {
            Ok(ack) => acked.push(ack.execution_id),
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let refused = refused.expect("the 3 MiB disk filled up");
    assert_eq!(refused.code(), Code::Unavailable, "a full disk is retriable: {refused:?}");
    assert!(acked.len() > 10, "some reports fit first");
    // Still full: writes keep failing the same way, reads keep working.
    let again = app.submit(bulky(99_999)).await.expect_err("still full");
    assert_eq!(again.code(), Code::Unavailable);
    let workers = app.query.clone().list_workers(ListWorkersRequest::default()).await.expect("reads work");
    assert_eq!(workers.into_inner().workers.len(), 5);

    // Space returns: writes succeed again, without a restart.
    fs.resize("64m");
    let mut recovered = false;
    for i in 0..50 {
        if let Ok(ack) = app.submit(bulky(100_000 + i)).await {
            acked.push(ack.execution_id);
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "writes succeed once there is space");
    let stored: std::collections::HashSet<String> = app.all_execution_ids().await.into_iter().collect();
    let missing: Vec<usize> =
        acked.iter().enumerate().filter(|(_, id)| !stored.contains(*id)).map(|(i, _)| i).collect();
    assert!(missing.is_empty(), "acked {} stored {} missing at {:?}", acked.len(), stored.len(), missing);
    app.stop().await;
    drop(fs);
    let _ = Backend::Sqlite;
}

/// The background checkpointer copies committed pages into the database file by itself: a few
/// rows (far below the writer's own checkpoint threshold) are found in a copy of the database
/// file alone, without its WAL, soon after their commit and with no further write.
#[tokio::test]
async fn committed_rows_reach_the_database_file_without_the_writer_checkpointing() {
    use runwarden::store::{Store, StoreOptions};
    use sea_orm::{ConnectionTrait, DbBackend, Statement};

    let db = TestDatabase::create(Backend::Sqlite).await;
    let store = Store::connect(&db.url, &StoreOptions::default()).await.expect("connect");
    store.migrate().await.expect("migrate");
    let txn = store.begin_write().await.expect("begin");
    txn.execute_raw(Statement::from_string(
        DbBackend::Sqlite,
        "INSERT INTO workers (worker_name, worker_type, first_seen_us, last_seen_us, last_outcome, run_count) \
         VALUES ('checkpointed_worker', 'analytics', 0, 0, 1, 0)",
    ))
    .await
    .expect("insert");
    txn.commit().await.expect("commit");

    let path = db.url.trim_start_matches("sqlite://").trim_end_matches("?mode=rwc").to_owned();
    let copy = format!("{path}.copy");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let found = loop {
        std::fs::copy(&path, &copy).expect("copy the database file");
        let alone = count_in_file_alone(&copy).await;
        if alone == 1 || std::time::Instant::now() > deadline {
            break alone;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(found, 1, "the committed row never reached the database file");
    store.close().await;
}

/// Rows of `checkpointed_worker` in the SQLite file at `path`, opened on its own (no WAL beside it).
async fn count_in_file_alone(path: &str) -> i64 {
    use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
    for stale in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{stale}"));
    }
    let db = Database::connect(format!("sqlite://{path}?mode=rw")).await.expect("open the copy");
    let count = db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT count(*) FROM workers WHERE worker_name = 'checkpointed_worker'",
        ))
        .await
        .ok()
        .flatten()
        .and_then(|row| row.try_get_by_index::<i64>(0).ok())
        .unwrap_or(0);
    db.close().await.ok();
    count
}
