//! Alert delivery: webhooks (signed, retried with backoff, exactly one delivery per state change
//! across failures and a restart), rules, and a real Alertmanager routing to a receiver served
//! here.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, routing::post};
use chrono::Utc;
use runwarden::{
    Config,
    alerts::{AlertsConfig, WebhookConfig, WebhookFormat},
    domain::alerting::{Rule, WebhookBody, verify_signature},
    proto::v1::{ListAlertDeliveriesRequest, ListAnomaliesRequest, Outcome},
};
use serde_json::Value;

use crate::{
    backend_tests,
    helpers::{Backend, TestApp, TestDatabase, run, spawn_app_with},
};

backend_tests!(
    webhook_deliveries_survive_failures_and_a_restart_exactly_once,
    each_key_continues_from_its_latest_row_however_long_its_history,
    a_backlog_fans_out_by_the_hundred_and_a_resolution_follows_its_firing_in_the_same_chunk
);

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    answered: u16,
}

/// An HTTP receiver on loopback that answers 500 to its first `fail_first` requests.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Received>>>,
}

#[derive(Clone)]
struct ReceiverState {
    seen: Arc<Mutex<Vec<Received>>>,
    fail_first: Arc<AtomicUsize>,
}

async fn receive(
    State(state): State<ReceiverState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::http::StatusCode {
    let fail = state.fail_first.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    let answered = if fail { 500 } else { 200 };
    state.seen.lock().expect("lock").push(Received { path: uri.path().to_owned(), headers, body, answered });
    axum::http::StatusCode::from_u16(answered).expect("status")
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = ReceiverState { seen: seen.clone(), fail_first: Arc::new(AtomicUsize::new(fail_first)) };
        let app = Router::new().route("/{*path}", post(receive)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self, path: &str) -> Vec<Received> {
        self.seen.lock().expect("lock").iter().filter(|r| r.path == path).cloned().collect()
    }
}

/// Twenty steady hourly runs, then one ten times slower, 40 minutes ago: DURATION_SPIKE (and
/// QUALITY_DROP) open; the worker stays UP (its next run is not due yet).
async fn spike(app: &TestApp, worker: &str) {
    for i in 0..20 {
        app.submit(run(worker, 1240 - 60 * i, 1000 + (i % 5) * 20, Outcome::Success)).await.expect("stored");
    }
    app.submit(run(worker, 40, 10_000, Outcome::Success)).await.expect("stored");
}

async fn open_anomalies(app: &TestApp) -> Vec<runwarden::proto::v1::Anomaly> {
    let request = ListAnomaliesRequest { open_only: true, ..Default::default() };
    app.query.clone().list_anomalies(request).await.expect("anomalies").into_inner().anomalies
}

fn fast_retries(alerts: &mut AlertsConfig) {
    alerts.retry_initial = Duration::from_millis(50);
    alerts.retry_max = Duration::from_millis(200);
    alerts.timeout = Duration::from_secs(5);
}

fn webhook(name: &str, url: String) -> WebhookConfig {
    WebhookConfig { name: name.into(), url, secret: Some("s3cret".into()), format: WebhookFormat::Json }
}

/// Runs sender passes until `done` holds (at most 15 s).
async fn passes_until(app: &TestApp, mut done: impl FnMut() -> bool) {
    for _ in 0..150 {
        app.alerts.pass().await.expect("alert pass");
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the alerts did not arrive in time");
}

async fn webhook_deliveries_survive_failures_and_a_restart_exactly_once(backend: Backend) {
    let receiver = Receiver::start(3).await;
    let url = receiver.url("/hook");
    let configure = move |config: &mut Config| {
        config.alerts.webhooks = vec![webhook("oncall", url.clone())];
        // Backfilling a day of hourly runs makes the worker DOWN until the recent ones arrive;
        // this channel takes the anomalies only.
        config.alerts.rules = vec![Rule {
            channel: "oncall".into(),
            kinds: vec!["DURATION_SPIKE".into(), "QUALITY_DROP".into()],
            ..Default::default()
        }];
        fast_retries(&mut config.alerts);
        // Every pass is this test's: a pass of the server's own, between the first attempts and
        // the restart, would retry them (50 ms later) before the restart.
        config.alerts.interval = Duration::from_secs(3600);
    };
    let app = spawn_app_with(TestDatabase::create(backend).await, configure.clone()).await;
    spike(&app, "intel_aggregation_hourly").await;
    let open = open_anomalies(&app).await;
    assert!(open.len() >= 2, "{open:?}");

    // One pass: fan-out, then every first attempt fails (the receiver is down for 3 requests).
    app.alerts.pass().await.expect("pass");
    let failed = receiver.seen("/hook");
    assert!(!failed.is_empty() && failed.iter().take(3).all(|r| r.answered == 500), "{failed:?}");
    // Restart between failures: nothing is lost.
    let db = app.stop().await;
    let app = spawn_app_with(db, configure).await;
    let expected = open.len();
    passes_until(&app, || receiver.seen("/hook").iter().filter(|r| r.answered == 200).count() >= expected).await;
    // More passes deliver nothing more.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        app.alerts.pass().await.expect("pass");
    }

    let seen = receiver.seen("/hook");
    let delivered: Vec<&Received> = seen.iter().filter(|r| r.answered == 200).collect();
    assert_eq!(seen.iter().filter(|r| r.answered == 500).count(), 3, "the three failures, then successes");
    assert_eq!(delivered.len(), expected, "exactly one delivery per state change");
    let mut by_key = BTreeMap::new();
    for r in &seen {
        let signature = r.headers.get("x-runwarden-signature").and_then(|v| v.to_str().ok()).expect("signed");
        assert!(verify_signature("s3cret", signature, &r.body, Utc::now().timestamp(), 300), "the signature verifies");
        let body: WebhookBody = serde_json::from_slice(&r.body).expect("documented body");
        assert_eq!(body.version, "runwarden.alert.v1");
        assert_eq!(
            r.headers.get("x-runwarden-delivery").and_then(|v| v.to_str().ok()),
            Some(body.delivery_id.as_str())
        );
        if r.answered == 200 {
            assert_eq!(body.status, "firing");
            assert_eq!(body.worker, "intel_aggregation_hourly");
            assert_eq!(body.worker_type, "analytics");
            by_key.insert(body.alert_key.clone(), body.delivery_id.clone());
        }
    }
    let mut kinds: Vec<String> = by_key.keys().map(|k| k.rsplit('/').next().unwrap_or_default().to_owned()).collect();
    kinds.sort();
    assert!(kinds.contains(&"DURATION_SPIKE".to_owned()), "{kinds:?}");
    // Retries carried the same delivery id as the attempt that finally got through.
    let ids: std::collections::HashSet<&str> = by_key.values().map(String::as_str).collect();
    for r in seen.iter().filter(|r| r.answered == 500) {
        let body: WebhookBody = serde_json::from_slice(&r.body).expect("body");
        assert!(ids.contains(body.delivery_id.as_str()), "a retry reuses its delivery id");
    }

    // Every attempt is on record, through the RPC.
    let attempts = app
        .query
        .clone()
        .list_alert_deliveries(ListAlertDeliveriesRequest { channel: "oncall".into(), limit: 100 })
        .await
        .expect("deliveries")
        .into_inner()
        .deliveries;
    assert_eq!(attempts.len(), seen.len());
    assert_eq!(attempts.iter().filter(|a| !a.ok && a.http_status == 500).count(), 3);
    assert!(attempts.iter().filter(|a| a.ok).all(|a| a.http_status == 200 && a.state == "firing"));

    // The next normal run resolves the spike: its resolution is delivered too.
    app.submit(run("intel_aggregation_hourly", 5, 1000, Outcome::Success)).await.expect("stored");
    passes_until(&app, || {
        receiver.seen("/hook").iter().any(|r| {
            serde_json::from_slice::<WebhookBody>(&r.body)
                .is_ok_and(|b| b.status == "resolved" && b.kind == "DURATION_SPIKE" && r.answered == 200)
        })
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_route_by_severity_and_worker() {
    let receiver = Receiver::start(0).await;
    let (critical, intel, slack) = (receiver.url("/critical"), receiver.url("/intel"), receiver.url("/slack"));
    let app = spawn_app_with(TestDatabase::create(Backend::Sqlite).await, move |config| {
        config.alerts.webhooks = vec![
            webhook("critical_only", critical),
            webhook("intel_only", intel),
            WebhookConfig { name: "chat".into(), url: slack, secret: None, format: WebhookFormat::Slack },
        ];
        config.alerts.rules = vec![
            Rule { channel: "critical_only".into(), min_severity: Some("CRITICAL".into()), ..Default::default() },
            Rule { channel: "intel_only".into(), worker_prefix: Some("intel_".into()), ..Default::default() },
        ];
        fast_retries(&mut config.alerts);
    })
    .await;
    spike(&app, "intel_aggregation_daily").await;
    for i in 0..3 {
        app.submit(run("coach_cleanup_worker", 300 - 100 * i, 1000, Outcome::Failed)).await.expect("stored");
    }
    let open = open_anomalies(&app).await;
    let key = |a: &runwarden::proto::v1::Anomaly| {
        let kind = runwarden::proto::v1::AnomalyKind::try_from(a.kind).expect("kind");
        format!("{}/{}", a.worker_name, kind.as_str_name().trim_start_matches("ANOMALY_KIND_"))
    };
    let critical_severity = runwarden::proto::v1::Severity::Critical as i32;
    let mut want_critical: Vec<String> = open.iter().filter(|a| a.severity == critical_severity).map(key).collect();
    let mut want_intel: Vec<String> = open.iter().filter(|a| a.worker_name.starts_with("intel_")).map(key).collect();
    want_critical.sort();
    want_intel.sort();
    assert!(!want_critical.is_empty() && !want_intel.is_empty() && want_critical != want_intel, "{open:?}");

    let total = open.len();
    passes_until(&app, || receiver.seen("/slack").len() >= total).await;
    // Backfilled hourly runs also made the workers DOWN for a while: health alerts, left out here.
    let keys = |path: &str| {
        let mut keys: Vec<String> = receiver
            .seen(path)
            .iter()
            .map(|r| serde_json::from_slice::<WebhookBody>(&r.body).expect("body").alert_key)
            .filter(|k| !k.contains("/WORKER_"))
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(keys("/critical"), want_critical);
    assert_eq!(keys("/intel"), want_intel);
    // No rules: the chat channel gets everything, as Slack text.
    let chat = receiver.seen("/slack");
    assert!(chat.len() >= total);
    for r in &chat {
        let body: Value = serde_json::from_slice(&r.body).expect("json");
        let text = body["text"].as_str().unwrap_or_default();
        assert!(text.contains("[FIRING]") || text.contains("[RESOLVED]"), "{body}");
        assert!(r.headers.get("x-runwarden-signature").is_none(), "no secret, no signature");
    }
    app.stop().await;
}

/// A real Alertmanager (Debian's prometheus-alertmanager) on a free port, routing everything
/// to `receiver` at once.
struct Alertmanager {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}

async fn start_alertmanager(receiver: &Receiver) -> Option<Alertmanager> {
    let binary = ["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"]
        .into_iter()
        .find(|b| std::path::Path::new(b).exists());
    let Some(binary) = binary else {
        assert!(std::env::var("CI").is_err(), "CI must install prometheus-alertmanager");
        eprintln!("skipping: prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)");
        return None;
    };
    let dir = tempfile::tempdir().expect("dir");
    let config = format!(
        "route:\n  receiver: test\n  group_by: ['alertname', 'worker']\n  group_wait: 100ms\n  group_interval: 1s\n  \
         repeat_interval: 1h\nreceivers:\n  - name: test\n    webhook_configs:\n      - url: {}\n        \
         send_resolved: true\n",
        receiver.url("/am")
    );
    std::fs::write(dir.path().join("alertmanager.yml"), config).expect("config");
    let port = free_port();
    let child = std::process::Command::new(binary)
        .arg(format!("--config.file={}", dir.path().join("alertmanager.yml").display()))
        .arg(format!("--storage.path={}", dir.path().display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start alertmanager");
    let url = format!("http://127.0.0.1:{port}");
    let am = Alertmanager { child, url: url.clone(), _dir: dir };
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http.get(format!("{url}/-/ready")).send().await.is_ok_and(|r| r.status().is_success()) {
            return Some(am);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("alertmanager did not become ready");
}

/// The alerts of every notification Alertmanager sent the receiver.
fn notified(receiver: &Receiver) -> Vec<(String, Value)> {
    receiver
        .seen("/am")
        .iter()
        .flat_map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            body["alerts"].as_array().cloned().unwrap_or_default().into_iter().map(|a| {
                let status = a["status"].as_str().unwrap_or_default().to_owned();
                (status, a)
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duration_spike_reaches_alertmanager_and_its_resolution_follows() {
    let receiver = Receiver::start(0).await;
    let Some(am) = start_alertmanager(&receiver).await else { return };
    let url = am.url.clone();
    let app = spawn_app_with(TestDatabase::create(Backend::Sqlite).await, move |config| {
        config.alerts.alertmanager_url = Some(url);
        config.alerts.dashboard_url = Some("https://runwarden.example".into());
        config.alerts.rules =
            vec![Rule { channel: "alertmanager".into(), kinds: vec!["DURATION_SPIKE".into()], ..Default::default() }];
        fast_retries(&mut config.alerts);
    })
    .await;
    app.workers
        .clone()
        .upsert_worker(runwarden::proto::v1::UpsertWorkerRequest {
            worker_name: "clip_radar_recap_worker".into(),
            owner: "media-team".into(),
            ..Default::default()
        })
        .await
        .expect("owner");
    spike(&app, "clip_radar_recap_worker").await;
    let is_spike =
        |a: &Value| a["labels"]["kind"] == "DURATION_SPIKE" && a["labels"]["worker"] == "clip_radar_recap_worker";
    passes_until(&app, || notified(&receiver).iter().any(|(s, a)| s == "firing" && is_spike(a))).await;
    let (_, alert) = notified(&receiver).into_iter().find(|(s, a)| s == "firing" && is_spike(a)).expect("firing");
    assert_eq!(alert["labels"]["alertname"], "RunwardenDurationSpike");
    assert_eq!(alert["labels"]["source"], "runwarden");
    assert_eq!(alert["labels"]["owner"], "media-team");
    assert_eq!(alert["labels"]["worker_type"], "analytics");
    assert!(["warning", "critical"].contains(&alert["labels"]["severity"].as_str().unwrap_or_default()), "{alert}");
    assert_eq!(alert["annotations"]["dashboard"], "https://runwarden.example/#/workers/clip_radar_recap_worker");
    assert!(alert["annotations"]["evidence"].as_str().is_some_and(|e| e.contains("baseline_median")), "{alert}");
    assert!(
        notified(&receiver).iter().all(|(_, a)| a["labels"]["kind"] == "DURATION_SPIKE"),
        "the rule keeps QUALITY_DROP away from Alertmanager"
    );

    app.submit(run("clip_radar_recap_worker", 5, 1000, Outcome::Success)).await.expect("stored");
    passes_until(&app, || notified(&receiver).iter().any(|(s, a)| s == "resolved" && is_spike(a))).await;
    app.stop().await;
    drop(am);
}

/// Two replicas on one PostgreSQL database run their senders at the same time: every change is
/// delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_send_each_alert_once() {
    if crate::helpers::postgres_url().is_none() {
        return;
    }
    let receiver = Receiver::start(0).await;
    let url = receiver.url("/hook");
    let configure = move |config: &mut Config| {
        config.alerts.webhooks = vec![webhook("oncall", url.clone())];
        fast_retries(&mut config.alerts);
    };
    let db = TestDatabase::create(Backend::Postgres).await;
    let shared = db.url.clone();
    let first = spawn_app_with(db, configure.clone()).await;
    let second = spawn_app_with(TestDatabase::borrowed(&shared), configure).await;
    spike(&first, "analytics_flush_worker").await;
    for _ in 0..20 {
        let (a, b) = tokio::join!(first.alerts.pass(), second.alerts.pass());
        a.expect("pass");
        b.expect("pass");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = receiver.seen("/hook");
    let mut ids: Vec<String> =
        seen.iter().map(|r| serde_json::from_slice::<WebhookBody>(&r.body).expect("body").delivery_id).collect();
    let total = ids.len();
    ids.sort();
    ids.dedup();
    assert!(total >= 2, "the spike's alerts arrived: {total}");
    assert_eq!(ids.len(), total, "no delivery was sent twice");
    second.stop().await;
    first.stop().await;
}

/// Rules added over the AdminService apply on the next pass; a rule with `after_consecutive`
/// waits until the condition was seen that many times in a row (here: guardian ticks over the
/// orphaned-streams threshold), and a channel never gets the same change twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_rules_and_after_consecutive() {
    use runwarden::proto::v1::{
        AlertRule, DeleteAlertRuleRequest, ListAlertRulesRequest, OpenStreamRequest,
        admin_service_client::AdminServiceClient, guardian_service_client::GuardianServiceClient,
    };
    let receiver = Receiver::start(0).await;
    let (patient, eager) = (receiver.url("/patient"), receiver.url("/eager"));
    let clock = crate::helpers::ManualClock::starting_now();
    let app = crate::helpers::spawn_app_with_clock(
        TestDatabase::create(Backend::Sqlite).await,
        move |config| {
            config.alerts.webhooks = vec![webhook("patient", patient), webhook("eager", eager)];
            config.guardian.tick_interval = Duration::from_secs(1);
            fast_retries(&mut config.alerts);
        },
        clock.clone(),
    )
    .await;
    let mut admin = AdminServiceClient::new(app.channel.clone());
    for (rule, field) in [
        (AlertRule { channel: "nowhere".into(), ..Default::default() }, "channel"),
        (
            AlertRule { channel: "patient".into(), quiet_hours: "25:00-01:00".into(), ..Default::default() },
            "quiet_hours",
        ),
        (AlertRule { channel: "patient".into(), min_severity: "LOUD".into(), ..Default::default() }, "min_severity"),
        (AlertRule { channel: "patient".into(), after_consecutive: 5000, ..Default::default() }, "after_consecutive"),
    ] {
        let status = admin.create_alert_rule(rule).await.expect_err("invalid rule");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains(field), "{field}: {}", status.message());
    }
    let created = admin
        .create_alert_rule(AlertRule {
            channel: "patient".into(),
            kinds: vec!["GUARDIAN_TOO_MANY_ORPHANED".into()],
            after_consecutive: 3,
            ..Default::default()
        })
        .await
        .expect("rule")
        .into_inner();
    assert!(created.id > 0 && created.source == "admin");
    let listed = admin.list_alert_rules(ListAlertRulesRequest {}).await.expect("list").into_inner().rules;
    assert_eq!(listed, vec![created.clone()]);

    // Seven streams go silent: more orphaned streams than the warning threshold (5).
    let mut guardian = GuardianServiceClient::new(app.channel.clone());
    for i in 0..7 {
        let request =
            OpenStreamRequest { stream_type: "generation".into(), owner: format!("o{i}"), ..Default::default() };
        guardian.open_stream(request).await.expect("open");
    }
    clock.advance(200);
    let key = |r: &Received| serde_json::from_slice::<WebhookBody>(&r.body).expect("body").kind;
    for tick in 1..=4 {
        clock.advance(1);
        app.guardian.run_once().await.expect("tick").expect("ticks");
        app.alerts.pass().await.expect("pass");
        let patient: Vec<String> = receiver.seen("/patient").iter().map(key).collect();
        let eager: Vec<String> =
            receiver.seen("/eager").iter().map(key).filter(|k| k == "GUARDIAN_TOO_MANY_ORPHANED").collect();
        assert_eq!(eager.len(), 1, "tick {tick}: the rule-less channel got it once, at once");
        let expected = usize::from(tick >= 3);
        assert_eq!(patient.len(), expected, "tick {tick}: the patient channel waits for 3 in a row: {patient:?}");
    }

    admin.delete_alert_rule(DeleteAlertRuleRequest { id: created.id }).await.expect("delete");
    assert!(admin.list_alert_rules(ListAlertRulesRequest {}).await.expect("list").into_inner().rules.is_empty());
    let missing = admin.delete_alert_rule(DeleteAlertRuleRequest { id: created.id }).await.expect_err("gone");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    app.stop().await;
}

/// `record` decides from each key's latest outbox row (one seek per key, not the key's whole
/// history). 250 keys (more than one chunk of 200), five state changes each, every firing with its
/// own start: firing again adds nothing, and the resolution carries the start of the *last* firing.
async fn each_key_continues_from_its_latest_row_however_long_its_history(backend: Backend) {
    use runwarden::{
        domain::alerting::{AlertEvent, AlertState},
        store::{Store, StoreOptions, alerts::record, entities::alert_outbox},
    };
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

    let db = TestDatabase::create(backend).await;
    let store = Store::connect(&db.url, &StoreOptions::default()).await.expect("open");
    store.migrate().await.expect("migrate");
    let t0 = Utc::now() - chrono::TimeDelta::days(1);
    let events = |round: i64, state: AlertState| -> Vec<AlertEvent> {
        (0..250)
            .map(|k| {
                let worker = format!("w{k:03}");
                AlertEvent {
                    key: AlertEvent::key_of(&worker, "DURATION_SPIKE"),
                    worker_name: worker,
                    kind: "DURATION_SPIKE".into(),
                    severity: "WARNING".into(),
                    state,
                    summary: format!("round {round}"),
                    evidence: serde_json::json!({ "round": round }),
                    starts_at: t0 + chrono::TimeDelta::minutes(round),
                    ends_at: (state == AlertState::Resolved).then(|| t0 + chrono::TimeDelta::minutes(round)),
                }
            })
            .collect()
    };
    let write = |batch: Vec<AlertEvent>, at: i64| {
        let store = store.clone();
        async move {
            let txn = store.begin_write().await.expect("begin");
            let written = record(&txn, &batch, at).await.expect("record");
            txn.commit().await.expect("commit");
            written
        }
    };
    // F R F R F: every change is a row.
    for round in 0..5 {
        let state = if round % 2 == 0 { AlertState::Firing } else { AlertState::Resolved };
        assert_eq!(write(events(round, state), round).await, 250, "round {round}");
    }
    // Still firing: no new row.
    assert_eq!(write(events(5, AlertState::Firing), 5).await, 0);
    // The resolution ends the firing of round 4, not an older one.
    assert_eq!(write(events(6, AlertState::Resolved), 6).await, 250);
    let last_firing_us = (t0 + chrono::TimeDelta::minutes(4)).timestamp_micros();
    let resolved = alert_outbox::Entity::find()
        .filter(alert_outbox::Column::CreatedAtUs.eq(6))
        .order_by_asc(alert_outbox::Column::Id)
        .all(store.reader())
        .await
        .expect("read");
    assert_eq!(resolved.len(), 250);
    for row in &resolved {
        assert_eq!(row.state, "resolved", "{}", row.alert_key);
        assert_eq!(row.starts_at_us, last_firing_us, "{}", row.alert_key);
    }
    let firing_again = alert_outbox::Entity::find()
        .filter(alert_outbox::Column::CreatedAtUs.eq(4))
        .all(store.reader())
        .await
        .expect("read");
    assert!(firing_again.iter().all(|r| r.occurrences == 2), "the repeat counted on the latest firing row");
    store.close().await;
}

/// A backlog of outbox rows (here 1,252) is fanned out a hundred rows per write transaction and
/// several pages per pass, not one row per transaction and 500 per pass; and a resolution fanned
/// out in the same transaction as its firing still goes where the firing goes (its firing's sends
/// are not written yet when it is planned).
async fn a_backlog_fans_out_by_the_hundred_and_a_resolution_follows_its_firing_in_the_same_chunk(backend: Backend) {
    use runwarden::{
        domain::alerting::{AlertEvent, AlertState},
        store::{Store, StoreOptions, alerts::record},
    };

    let db = TestDatabase::create(backend).await;
    let store = Store::connect(&db.url, &StoreOptions::default()).await.expect("open");
    store.migrate().await.expect("migrate");
    let t0 = Utc::now() - chrono::TimeDelta::hours(1);
    let event = |worker: String, state: AlertState| AlertEvent {
        key: AlertEvent::key_of(&worker, "DURATION_SPIKE"),
        worker_name: worker,
        kind: "DURATION_SPIKE".into(),
        severity: "WARNING".into(),
        state,
        summary: String::new(),
        evidence: serde_json::json!({}),
        starts_at: t0,
        ends_at: (state == AlertState::Resolved).then_some(t0),
    };
    let write = |events: Vec<AlertEvent>| {
        let store = store.clone();
        async move {
            let txn = store.begin_write().await.expect("begin");
            let written = record(&txn, &events, t0.timestamp_micros()).await.expect("record");
            txn.commit().await.expect("commit");
            written
        }
    };
    // 1,200 firings; the first 50 resolve; then one more key fires and resolves at once, so its
    // two rows are neighbours in the last chunk.
    let firing: Vec<_> = (0..1200).map(|k| event(format!("w{k:04}"), AlertState::Firing)).collect();
    assert_eq!(write(firing).await, 1200);
    let resolved: Vec<_> = (0..50).map(|k| event(format!("w{k:04}"), AlertState::Resolved)).collect();
    assert_eq!(write(resolved).await, 50);
    assert_eq!(write(vec![event("late".into(), AlertState::Firing)]).await, 1);
    assert_eq!(write(vec![event("late".into(), AlertState::Resolved)]).await, 1);
    store.close().await;

    let receiver = Receiver::start(0).await;
    let url = receiver.url("/hook");
    let app = spawn_app_with(db, move |config: &mut Config| {
        config.alerts.webhooks = vec![webhook("oncall", url.clone())];
        fast_retries(&mut config.alerts);
        // The first pass is this test's (a pass of the server's own could fan the backlog out).
        config.alerts.interval = Duration::from_secs(3600);
    })
    .await;
    let first = app.alerts.pass().await.expect("pass");
    assert!(first.fanned_out > 500, "more than one page in a pass: {first:?}");
    passes_until(&app, || receiver.seen("/hook").len() >= 1252).await;

    let bodies: Vec<WebhookBody> =
        receiver.seen("/hook").iter().map(|r| serde_json::from_slice(&r.body).expect("body")).collect();
    assert_eq!(bodies.len(), 1252, "one delivery per outbox row");
    assert_eq!(bodies.iter().filter(|b| b.status == "resolved").count(), 51);
    let late: Vec<&str> = bodies.iter().filter(|b| b.worker == "late").map(|b| b.status.as_str()).collect();
    assert_eq!(late, ["firing", "resolved"]);
    app.stop().await;
}
