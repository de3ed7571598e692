//! A PostgreSQL outage: the test runs its own PostgreSQL (initdb + pg_ctl in a temp dir, on a
//! free loopback port), stops it under load for several seconds and starts it again. During the
//! outage health is NOT_SERVING and submissions answer UNAVAILABLE, never OK; afterwards the
//! server recovers by itself and every acknowledged report is there.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use runwarden::proto::v1::SubmitReportRequest;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::helpers::{TestDatabase, report_at, spawn_app_with};

/// A PostgreSQL server of the test's own.
struct OwnPostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

fn as_postgres(bin: &Path, program: &str, args: &[&str]) -> std::process::Output {
    // initdb and the server refuse to run as root.
    let mut command = if nix_is_root() { Command::new("runuser") } else { Command::new(bin.join(program)) };
    if nix_is_root() {
        command.args(["-u", "postgres", "--"]).arg(bin.join(program));
    }
    command.args(args).output().expect("run a PostgreSQL tool")
}

fn nix_is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl OwnPostgres {
    fn start() -> Option<OwnPostgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())?;
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().join("data");
        if nix_is_root() {
            let owner = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status();
            assert!(owner.is_ok_and(|s| s.success()), "chown the data dir");
        }
        let data_arg = data.to_str().expect("utf-8 path");
        let init = as_postgres(&bin, "initdb", &["-D", data_arg, "-A", "trust", "-U", "postgres", "--no-sync"]);
        assert!(init.status.success(), "initdb: {}", String::from_utf8_lossy(&init.stderr));
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).ok()?;
        let pg = OwnPostgres { bin, data, port, _dir: dir };
        pg.pg_ctl_start();
        Some(pg)
    }

    fn pg_ctl_start(&self) {
        let options = format!("-p {} -c listen_addresses=127.0.0.1 -k {}", self.port, self.data.display());
        let data = self.data.to_str().expect("utf-8 path");
        let out = as_postgres(
            &self.bin,
            "pg_ctl",
            &["-D", data, "-o", &options, "-w", "-l", &format!("{data}/log"), "start"],
        );
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn pg_ctl_stop(&self) {
        let data = self.data.to_str().expect("utf-8 path");
        let out = as_postgres(&self.bin, "pg_ctl", &["-D", data, "-m", "fast", "-w", "stop"]);
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.data.to_str().unwrap_or_default();
        let _ = as_postgres(&self.bin, "pg_ctl", &["-D", data, "-m", "immediate", "stop"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_outage_answers_unavailable_and_recovers_by_itself() {
    let Some(pg) = OwnPostgres::start() else {
        assert!(std::env::var("CI").is_err(), "CI machines have PostgreSQL's initdb and pg_ctl");
        eprintln!("skipping: no PostgreSQL server binaries (initdb) on this machine");
        return;
    };
    // A short acquire timeout keeps each refused submission quick (the default is 5 s).
    let app = spawn_app_with(TestDatabase::borrowed(&pg.url()), |c| {
        c.store.connect_timeout = Duration::from_millis(500);
    })
    .await;
    let mut health = HealthClient::new(app.channel.clone());
    let serving = |h: &mut HealthClient<tonic::transport::Channel>| {
        let mut h = h.clone();
        async move {
            h.check(HealthCheckRequest { service: String::new() }).await.map(|r| r.into_inner().status).unwrap_or(0)
        }
    };
    assert_eq!(serving(&mut health).await, ServingStatus::Serving as i32);

    let acked = Arc::new(Mutex::new(Vec::new()));
    let submit = |i: i64| {
        let app_report = app.report.clone();
        let acked = acked.clone();
        async move {
            let report = report_at("outage_worker", i % 3600);
            let id = report.execution_id.clone();
            let result = app_report.clone().submit_report(SubmitReportRequest { report: Some(report) }).await;
            if result.is_ok() {
                acked.lock().expect("lock").push(id);
            }
            result.map(|_| ()).map_err(|s| s.code())
        }
    };
    for i in 0..50 {
        submit(i).await.expect("before the outage");
    }

    pg.pg_ctl_stop();
    // During the outage: never OK; UNAVAILABLE; health goes NOT_SERVING.
    let mut not_serving = false;
    let outage = std::time::Instant::now();
    for i in 0..15 {
        let code = submit(1000 + i).await.expect_err("no report is acknowledged while the database is down");
        assert_eq!(code, Code::Unavailable, "submissions answer UNAVAILABLE during the outage");
        if serving(&mut health).await == ServingStatus::NotServing as i32 {
            not_serving = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(not_serving, "health reported NOT_SERVING during the outage");
    eprintln!("outage lasted {:?}", outage.elapsed());

    pg.pg_ctl_start();
    // Recovers without a restart.
    let mut recovered = false;
    for i in 0..100 {
        if submit(5000 + i).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(recovered, "submissions succeed again once the database is back");
    for i in 0..50 {
        submit(9000 + i).await.expect("after the outage");
    }
    let mut back = false;
    for _ in 0..50 {
        if serving(&mut health).await == ServingStatus::Serving as i32 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(back, "health is SERVING again");

    let stored: HashSet<String> = app.all_execution_ids().await.into_iter().collect();
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 101);
    let missing = acked.iter().filter(|id| !stored.contains(*id)).count();
    assert_eq!(missing, 0, "every acknowledged report survived the outage");
    app.stop().await;
}
