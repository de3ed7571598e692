//! Alert delivery. State changes are in the outbox (written with the anomaly, the health change or
//! the guardian warning that caused them); this sender turns each into one send per channel whose
//! rules take it, delivers with retries and exponential backoff, records every attempt, and keeps
//! Alertmanager's view of what is firing fresh by re-sending it (as Prometheus does).
//!
//! Nothing here runs in a request: a dead endpoint delays only its own sends. Deliveries are
//! at-least-once (a crash between the receiver's answer and the record re-sends); each carries a
//! delivery id that stays the same across attempts, so receivers drop repeats. With several
//! replicas, a pass runs only on the one holding the alerts lock (PostgreSQL advisory lock).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseTransaction, DbBackend, TransactionTrait};
use serde::Deserialize;
use tokio::sync::watch;

use crate::{
    api::Clock,
    domain::alerting::{self, AlertState, Rule, WorkerContext},
    error::Error,
    store::{
        Store,
        alerts::{self, Attempt, Next, OutboxRow, SendRow},
        to_micros,
    },
};

/// Advisory lock key of the alert sender.
const ALERTS_LOCK_KEY: i64 = 0x7275_6e77_6172_6404;
/// Channel name of Alertmanager in rules and records.
pub const ALERTMANAGER: &str = "alertmanager";
/// How long a claimed send is held before another pass may retry it.
const LEASE: Duration = Duration::from_secs(60);
/// Outbox rows read at a time while fanning out.
const FAN_OUT_PAGE: u64 = 500;
/// Outbox rows fanned out per write transaction. SQLite has one write connection, which ingest
/// waits for behind each of these; one row per transaction, as before, meant a commit (an fsync)
/// per row, and a backlog of anomalies drained at 250 rows/s while it loaded the writer.
const FAN_OUT_CHUNK: usize = 100;
/// How long one pass keeps fanning out a backlog, a page at a time, before it delivers.
const FAN_OUT_BUDGET: Duration = Duration::from_secs(1);

/// A webhook's body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The versioned runwarden JSON (docs/alerts.md).
    #[default]
    Json,
    /// `{"text": …}` for Slack incoming webhooks and compatible receivers.
    Slack,
}

/// `[[alerts.webhooks]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub name: String,
    pub url: String,
    /// HMAC-SHA256 key of the signature header; none: unsigned.
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub format: WebhookFormat,
}

/// `[alerts]`.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// Alertmanager's base URL (`http://alertmanager:9093`).
    pub alertmanager_url: Option<String>,
    /// How often firing alerts are re-sent to Alertmanager; they end 4 intervals later unless re-sent.
    pub alertmanager_resend: Duration,
    pub webhooks: Vec<WebhookConfig>,
    pub rules: Vec<Rule>,
    /// Base URL of the dashboard, for links in alerts.
    pub dashboard_url: Option<String>,
    /// Between sender passes.
    pub interval: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Attempts before a send is given up (recorded as failed).
    pub max_attempts: u32,
    /// Per attempt.
    pub timeout: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            alertmanager_url: None,
            alertmanager_resend: Duration::from_secs(60),
            webhooks: Vec::new(),
            rules: Vec::new(),
            dashboard_url: None,
            interval: Duration::from_secs(2),
            retry_initial: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
            max_attempts: 25,
            timeout: Duration::from_secs(10),
        }
    }
}

impl AlertsConfig {
    /// Every channel's name.
    pub fn channels(&self) -> Vec<String> {
        let mut channels: Vec<String> = self.webhooks.iter().map(|w| w.name.clone()).collect();
        if self.alertmanager_url.is_some() {
            channels.push(ALERTMANAGER.to_owned());
        }
        channels
    }

    /// Checks names, URLs and rules; messages name the field.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for hook in &self.webhooks {
            if hook.name.is_empty() || hook.name == ALERTMANAGER || !names.insert(hook.name.as_str()) {
                return Err(format!(
                    "webhooks.name: {:?} must be unique, non-empty and not {ALERTMANAGER:?}",
                    hook.name
                ));
            }
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                return Err(format!("webhooks.url of {:?}: must be an http(s) URL", hook.name));
            }
        }
        let channels = self.channels();
        for rule in &self.rules {
            rule.validate()?;
            if !channels.contains(&rule.channel) {
                return Err(format!(
                    "rules.channel: {:?} is neither alertmanager (configured) nor a webhook",
                    rule.channel
                ));
            }
        }
        Ok(())
    }
}

/// What a pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AlertPass {
    pub fanned_out: usize,
    pub delivered: usize,
    pub failed_attempts: usize,
    pub given_up: usize,
    pub resent: usize,
    /// Another replica holds the sender.
    pub skipped: bool,
}

pub struct Alerts {
    store: Store,
    clock: Arc<dyn Clock>,
    config: AlertsConfig,
    http: reqwest::Client,
    last_resend: Mutex<Option<Instant>>,
}

impl Alerts {
    pub fn new(store: Store, clock: Arc<dyn Clock>, config: AlertsConfig) -> Arc<Alerts> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("runwarden/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Arc::new(Alerts { store, clock, config, http, last_resend: Mutex::new(None) })
    }

    /// One pass: fan out new state changes, deliver what is due, re-send firing alerts to
    /// Alertmanager when due.
    pub async fn pass(&self) -> Result<AlertPass, Error> {
        // On PostgreSQL the lock is held by this transaction for the whole pass; its writes go
        // through their own short transactions.
        let guard: Option<DatabaseTransaction> = if self.store.backend() == DbBackend::Postgres {
            let txn = self.store.reader().begin().await?;
            if !crate::store::try_singleton_lock(&txn, ALERTS_LOCK_KEY).await? {
                return Ok(AlertPass { skipped: true, ..AlertPass::default() });
            }
            Some(txn)
        } else {
            None
        };
        let mut pass = AlertPass { fanned_out: self.fan_out().await?, ..AlertPass::default() };
        self.deliver(&mut pass).await?;
        pass.resent = self.resend_to_alertmanager().await?;
        if let Some(txn) = guard {
            txn.rollback().await?;
        }
        Ok(pass)
    }

    /// The rules in force: the config file's, then those added through the AdminService.
    pub async fn rules(&self) -> Result<Vec<Rule>, Error> {
        let mut rules = self.config.rules.clone();
        rules.extend(alerts::rules(self.store.reader()).await?.iter().map(alerts::rule_of));
        Ok(rules)
    }

    pub fn config(&self) -> &AlertsConfig {
        &self.config
    }

    /// Every rule with its id (`None` for the config file's).
    pub async fn list_rules(&self) -> Result<Vec<(Option<i64>, Rule)>, Error> {
        let mut rules: Vec<_> = self.config.rules.iter().cloned().map(|r| (None, r)).collect();
        rules.extend(alerts::rules(self.store.reader()).await?.iter().map(|row| (Some(row.id), alerts::rule_of(row))));
        Ok(rules)
    }

    /// Adds a rule after checking it; errors name the field.
    pub async fn add_rule(&self, rule: Rule) -> Result<i64, Error> {
        rule.validate().map_err(|e| {
            let (field, why) = e.split_once(": ").unwrap_or(("rule", e.as_str()));
            Error::invalid(field, why)
        })?;
        if !self.config.channels().contains(&rule.channel) {
            return Err(Error::invalid(
                "channel",
                format!("{:?} is neither alertmanager (if configured) nor a configured webhook", rule.channel),
            ));
        }
        let txn = self.store.begin_write().await?;
        let row = alerts::insert_rule(&txn, &rule, to_micros(self.clock.now())).await?;
        txn.commit().await?;
        tracing::info!(rule_id = row.id, channel = %rule.channel, "alert rule added");
        Ok(row.id)
    }

    pub async fn delete_rule(&self, id: i64) -> Result<(), Error> {
        let txn = self.store.begin_write().await?;
        let found = alerts::delete_rule(&txn, id).await?;
        txn.commit().await?;
        if !found {
            return Err(Error::NotFound(format!(
                "no alert rule {id} (rules from the config file cannot be deleted here)"
            )));
        }
        tracing::info!(rule_id = id, "alert rule deleted");
        Ok(())
    }

    async fn fan_out(&self) -> Result<usize, Error> {
        let channels = self.config.channels();
        let started = Instant::now();
        let mut rules = None;
        let mut fanned = 0;
        loop {
            let rows = alerts::unfanned(self.store.reader(), FAN_OUT_PAGE).await?;
            if rows.is_empty() {
                break;
            }
            let rules = match &rules {
                Some(rules) => rules,
                None => rules.insert(self.rules().await?),
            };
            for chunk in rows.chunks(FAN_OUT_CHUNK) {
                let now = self.clock.now();
                let txn = self.store.begin_write().await?;
                let mut planned: Vec<(&alerts::OutboxRow, Vec<String>)> = Vec::with_capacity(chunk.len());
                for row in chunk {
                    let targets = self.targets(&txn, row, &channels, rules, &planned).await?;
                    planned.push((row, targets));
                }
                alerts::fan_out(&txn, &planned, to_micros(now)).await?;
                txn.commit().await?;
            }
            fanned += rows.len();
            if rows.len() < FAN_OUT_PAGE as usize || started.elapsed() >= FAN_OUT_BUDGET {
                break;
            }
        }
        Ok(fanned)
    }

    /// The channels `row` goes to. A firing goes where the rules send it; a resolution where its
    /// firing went, read in the fan-out's transaction after the rows `planned` before it, whose
    /// sends are not written yet: a firing among them adds the channels it is given.
    async fn targets(
        &self,
        txn: &DatabaseTransaction,
        row: &alerts::OutboxRow,
        channels: &[String],
        rules: &[Rule],
        planned: &[(&alerts::OutboxRow, Vec<String>)],
    ) -> Result<Vec<String>, Error> {
        if row.state != AlertState::Resolved.as_str() {
            let event = alerts::event_of(row);
            let at = crate::store::from_micros(row.created_at_us);
            let occurrences = u32::try_from(row.occurrences).unwrap_or(1);
            return Ok(channels
                .iter()
                .filter(|c| alerting::channel_gets(c, rules, &event, at, occurrences))
                .cloned()
                .collect());
        }
        let Some((firing, mut sent)) = alerts::firing_of(txn, row).await? else { return Ok(Vec::new()) };
        if let Some((_, given)) = planned.iter().find(|(r, _)| r.id == firing) {
            for channel in given {
                if !sent.contains(channel) {
                    sent.push(channel.clone());
                }
            }
        }
        Ok(sent)
    }

    async fn deliver(&self, pass: &mut AlertPass) -> Result<(), Error> {
        loop {
            let now = self.clock.now();
            let txn = self.store.begin_write().await?;
            let due = alerts::claim_due(&txn, to_micros(now), LEASE.as_micros() as i64, 100).await?;
            txn.commit().await?;
            if due.is_empty() {
                return Ok(());
            }
            // Channels in parallel; each channel's sends in order.
            let mut by_channel: std::collections::BTreeMap<String, Vec<(SendRow, OutboxRow)>> = Default::default();
            for (send, row) in due {
                by_channel.entry(send.channel.clone()).or_default().push((send, row));
            }
            let results = futures::future::join_all(by_channel.into_values().map(|sends| async move {
                let mut outcomes = Vec::new();
                for (send, row) in sends {
                    let attempt = self.attempt(&send, &row).await;
                    outcomes.push((send, attempt));
                }
                outcomes
            }))
            .await;
            for (send, attempt) in results.into_iter().flatten() {
                let now = self.clock.now();
                let attempts = u32::try_from(send.attempts + 1).unwrap_or(u32::MAX);
                let next = if attempt.ok {
                    pass.delivered += 1;
                    Next::Delivered
                } else if attempts >= self.config.max_attempts {
                    pass.given_up += 1;
                    Next::GiveUp
                } else {
                    pass.failed_attempts += 1;
                    let wait = alerting::backoff(
                        self.config.retry_initial.as_secs_f64(),
                        self.config.retry_max.as_secs_f64(),
                        attempts,
                    );
                    Next::RetryAt(to_micros(now) + (wait * 1e6) as i64)
                };
                metrics::counter!(
                    "runwarden_alert_attempts_total",
                    "channel" => send.channel.clone(),
                    "result" => if attempt.ok { "delivered" } else { "failed" }
                )
                .increment(1);
                if !attempt.ok {
                    tracing::warn!(
                        channel = %send.channel,
                        delivery_id = %send.delivery_id,
                        attempt = attempts,
                        error = attempt.error.as_deref().unwrap_or(""),
                        "alert delivery failed"
                    );
                }
                let txn = self.store.begin_write().await?;
                alerts::finish(&txn, &send, &attempt, next, to_micros(now)).await?;
                txn.commit().await?;
            }
        }
    }

    async fn worker_context(&self, worker: &str) -> WorkerContext {
        match crate::store::workers::find_by_name(self.store.reader(), worker).await {
            Ok(Some(row)) => WorkerContext { worker_type: row.worker_type, owner: row.owner },
            _ => WorkerContext::default(),
        }
    }

    async fn attempt(&self, send: &SendRow, row: &OutboxRow) -> Attempt {
        let started = Instant::now();
        let event = alerts::event_of(row);
        let worker = self.worker_context(&row.worker_name).await;
        let dashboard = self.config.dashboard_url.as_deref();
        let request = if send.channel == ALERTMANAGER {
            // A firing already resolved since: its resolution follows; sending it now would
            // re-open the alert in Alertmanager until it expires.
            if event.state == AlertState::Firing
                && !alerts::is_firing(self.store.reader(), &row.alert_key).await.unwrap_or(true)
            {
                return Attempt { ok: true, http_status: None, latency_ms: 0, error: None };
            }
            let Some(base) = &self.config.alertmanager_url else {
                return failed(started, "alertmanager is no longer configured");
            };
            let alert = alerting::alertmanager_alert(&event, &worker, dashboard, self.valid_until());
            self.http.post(format!("{}/api/v2/alerts", base.trim_end_matches('/'))).json(&[alert])
        } else {
            let Some(hook) = self.config.webhooks.iter().find(|w| w.name == send.channel) else {
                return failed(started, "the webhook is no longer configured");
            };
            let body = match hook.format {
                WebhookFormat::Json => {
                    serde_json::to_vec(&alerting::webhook_body(&event, &send.delivery_id, &worker, dashboard))
                }
                WebhookFormat::Slack => serde_json::to_vec(&alerting::slack_body(&event, dashboard)),
            }
            .unwrap_or_default();
            let mut request = self
                .http
                .post(&hook.url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(alerting::DELIVERY_HEADER, &send.delivery_id);
            if let Some(secret) = &hook.secret {
                let timestamp = self.clock.now().timestamp();
                request = request.header(alerting::SIGNATURE_HEADER, alerting::signature(secret, timestamp, &body));
            }
            request.body(body)
        };
        match request.send().await {
            Ok(response) if response.status().is_success() => Attempt {
                ok: true,
                http_status: Some(i32::from(response.status().as_u16())),
                latency_ms: started.elapsed().as_millis() as i64,
                error: None,
            },
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                Attempt {
                    ok: false,
                    http_status: Some(i32::from(status.as_u16())),
                    latency_ms: started.elapsed().as_millis() as i64,
                    error: Some(format!("HTTP {status}: {}", text.chars().take(200).collect::<String>())),
                }
            }
            Err(e) => failed(started, &e.to_string()),
        }
    }

    fn valid_until(&self) -> DateTime<Utc> {
        let ahead =
            chrono::TimeDelta::from_std(self.config.alertmanager_resend * 4).unwrap_or(chrono::TimeDelta::minutes(4));
        self.clock.now() + ahead
    }

    /// Re-sends every firing alert to Alertmanager once per resend interval, so it does not
    /// expire while still firing. Returns how many were sent.
    async fn resend_to_alertmanager(&self) -> Result<usize, Error> {
        let Some(base) = &self.config.alertmanager_url else { return Ok(0) };
        let due = match self.last_resend.lock() {
            Ok(mut last) => {
                let due = last.is_none_or(|t| t.elapsed() >= self.config.alertmanager_resend);
                if due {
                    *last = Some(Instant::now());
                }
                due
            }
            Err(_) => false,
        };
        if !due {
            return Ok(0);
        }
        // Only what was routed to Alertmanager (rules apply).
        let firing = alerts::firing(self.store.reader()).await?;
        let rules = self.rules().await?;
        let mut batch = Vec::new();
        for row in &firing {
            let event = alerts::event_of(row);
            let at = crate::store::from_micros(row.created_at_us);
            let occurrences = u32::try_from(row.occurrences).unwrap_or(1);
            if alerting::channel_gets(ALERTMANAGER, &rules, &event, at, occurrences) {
                let worker = self.worker_context(&row.worker_name).await;
                batch.push(alerting::alertmanager_alert(
                    &event,
                    &worker,
                    self.config.dashboard_url.as_deref(),
                    self.valid_until(),
                ));
            }
        }
        if batch.is_empty() {
            return Ok(0);
        }
        let sent = batch.len();
        match self.http.post(format!("{}/api/v2/alerts", base.trim_end_matches('/'))).json(&batch).send().await {
            Ok(r) if r.status().is_success() => Ok(sent),
            Ok(r) => {
                tracing::warn!(status = %r.status(), "re-sending firing alerts to Alertmanager failed");
                Ok(0)
            }
            Err(e) => {
                tracing::warn!(error = %e, "re-sending firing alerts to Alertmanager failed");
                Ok(0)
            }
        }
    }
}

fn failed(started: Instant, error: &str) -> Attempt {
    Attempt {
        ok: false,
        http_status: None,
        latency_ms: started.elapsed().as_millis() as i64,
        error: Some(error.to_owned()),
    }
}

/// Runs a pass every interval, the first one interval after start, until draining starts.
pub async fn run(alerts: Arc<Alerts>, mut draining: watch::Receiver<bool>) {
    let every = alerts.config.interval;
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = draining.wait_for(|d| *d) => return,
        }
        if let Err(e) = alerts.pass().await {
            tracing::warn!(error = %e, "alert pass failed");
        }
    }
}
