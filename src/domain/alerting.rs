//! Alerts: what fires and resolves (open anomalies, LATE and DOWN workers, guardian warnings),
//! which channel gets which alert (rules), and what goes on the wire: Alertmanager's v2 alerts,
//! the versioned webhook JSON with its HMAC-SHA256 signature, a Slack-compatible body. Pure.

use chrono::{DateTime, Timelike, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;

/// The webhook body's schema version.
pub const WEBHOOK_VERSION: &str = "runwarden.alert.v1";
/// Header carrying `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "x-runwarden-signature";
/// Header carrying the delivery id, the same on every attempt of one delivery.
pub const DELIVERY_HEADER: &str = "x-runwarden-delivery";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// One state change of one alert, identified by `key` (`worker/KIND`).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    pub key: String,
    pub worker_name: String,
    pub kind: String,
    /// `INFO`, `WARNING` or `CRITICAL`.
    pub severity: String,
    pub state: AlertState,
    pub summary: String,
    pub evidence: Value,
    pub starts_at: DateTime<Utc>,
    /// When it resolved.
    pub ends_at: Option<DateTime<Utc>>,
}

impl AlertEvent {
    pub fn key_of(worker: &str, kind: &str) -> String {
        format!("{worker}/{kind}")
    }

    pub fn firing(
        worker: &str,
        kind: &str,
        severity: &str,
        summary: String,
        evidence: Value,
        at: DateTime<Utc>,
    ) -> Self {
        AlertEvent {
            key: Self::key_of(worker, kind),
            worker_name: worker.to_owned(),
            kind: kind.to_owned(),
            severity: severity.to_owned(),
            state: AlertState::Firing,
            summary,
            evidence,
            starts_at: at,
            ends_at: None,
        }
    }

    /// The resolution of `worker/kind`; severity and start are the firing's (the store fills
    /// them in from the last firing).
    pub fn resolved(worker: &str, kind: &str, at: DateTime<Utc>) -> Self {
        AlertEvent {
            key: Self::key_of(worker, kind),
            worker_name: worker.to_owned(),
            kind: kind.to_owned(),
            severity: String::new(),
            state: AlertState::Resolved,
            summary: format!("{kind} on {worker} resolved"),
            evidence: json!({}),
            starts_at: at,
            ends_at: Some(at),
        }
    }

    /// A worker's health change as alerts: entering LATE or DOWN fires `WORKER_LATE` /
    /// `WORKER_DOWN`; leaving it resolves that alert.
    pub fn health_change(worker: &str, previous: &str, current: &str, at: DateTime<Utc>) -> Vec<AlertEvent> {
        let kind_of = |health: &str| match health {
            "LATE" => Some(("WORKER_LATE", "WARNING")),
            "DOWN" => Some(("WORKER_DOWN", "CRITICAL")),
            _ => None,
        };
        let mut events = Vec::new();
        if let Some((kind, _)) = kind_of(previous).filter(|_| previous != current) {
            events.push(AlertEvent::resolved(worker, kind, at));
        }
        if let Some((kind, severity)) = kind_of(current).filter(|_| previous != current) {
            let summary = format!("{worker} is {current}: its expected run did not start in time");
            let evidence = json!({ "previous_health": previous, "health": current });
            events.push(AlertEvent::firing(worker, kind, severity, summary, evidence, at));
        }
        events
    }
}

pub fn severity_rank(severity: &str) -> u8 {
    match severity.to_ascii_uppercase().as_str() {
        "CRITICAL" => 2,
        "WARNING" => 1,
        _ => 0,
    }
}

/// Which alerts a channel gets. A channel with no rules gets every alert; with rules, an alert
/// that at least one of its rules matches.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// `alertmanager` or a webhook's name.
    pub channel: String,
    /// `INFO` (default), `WARNING` or `CRITICAL`.
    #[serde(default)]
    pub min_severity: Option<String>,
    /// Alert kinds (`DURATION_SPIKE`, `MISSED_RUN`, `WORKER_DOWN`, `GUARDIAN_ORPHAN_RATE_HIGH`…);
    /// empty: all.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Only workers whose name starts with this.
    #[serde(default)]
    pub worker_prefix: Option<String>,
    /// `"22:00-07:00"` (UTC): alerts that fire in this window do not match (their resolution
    /// does not either, since only what was sent is resolved).
    #[serde(default)]
    pub quiet_hours: Option<String>,
    /// Only once the condition was observed this many times in a row while firing (each
    /// anomalous run, each missed slot, each guardian tick over its threshold). Default 1.
    #[serde(default)]
    pub after_consecutive: Option<u32>,
}

impl Rule {
    /// Checks the rule's values; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(s) = &self.min_severity
            && !["INFO", "WARNING", "CRITICAL"].contains(&s.to_ascii_uppercase().as_str())
        {
            return Err(format!("min_severity: {s:?} is not INFO, WARNING or CRITICAL"));
        }
        if let Some(q) = &self.quiet_hours {
            parse_quiet_hours(q).map_err(|e| format!("quiet_hours: {e}"))?;
        }
        if self.channel.is_empty() {
            return Err("channel: must name alertmanager or a webhook".into());
        }
        if let Some(kind) = self.kinds.iter().find(|k| k.is_empty() || k.len() > 64) {
            return Err(format!("kinds: {kind:?} is not an alert kind"));
        }
        if self.after_consecutive.is_some_and(|n| !(1..=1000).contains(&n)) {
            return Err("after_consecutive: must be between 1 and 1000".into());
        }
        Ok(())
    }

    /// Whether the rule takes `event`, which fired at `at` and has been observed `occurrences`
    /// times in a row.
    pub fn matches(&self, event: &AlertEvent, at: DateTime<Utc>, occurrences: u32) -> bool {
        let severity_ok =
            self.min_severity.as_deref().is_none_or(|min| severity_rank(&event.severity) >= severity_rank(min));
        let kind_ok = self.kinds.is_empty() || self.kinds.iter().any(|k| k.eq_ignore_ascii_case(&event.kind));
        let worker_ok = self.worker_prefix.as_deref().is_none_or(|p| event.worker_name.starts_with(p));
        let quiet = self
            .quiet_hours
            .as_deref()
            .and_then(|q| parse_quiet_hours(q).ok())
            .is_some_and(|(from, to)| in_window(at.hour() * 60 + at.minute(), from, to));
        let often_enough = occurrences >= self.after_consecutive.unwrap_or(1);
        severity_ok && kind_ok && worker_ok && !quiet && often_enough
    }
}

/// Whether a channel with `rules` (all rules of every channel; only this channel's count)
/// gets `event`, observed `occurrences` times in a row.
pub fn channel_gets(channel: &str, rules: &[Rule], event: &AlertEvent, at: DateTime<Utc>, occurrences: u32) -> bool {
    let mut own = rules.iter().filter(|r| r.channel == channel).peekable();
    own.peek().is_none() || own.any(|r| r.matches(event, at, occurrences))
}

/// `HH:MM-HH:MM` as minutes of the day.
pub fn parse_quiet_hours(text: &str) -> Result<(u32, u32), String> {
    let minutes = |s: &str| -> Option<u32> {
        let (h, m) = s.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    let (from, to) = text.split_once('-').ok_or_else(|| format!("{text:?} is not HH:MM-HH:MM"))?;
    match (minutes(from), minutes(to)) {
        (Some(f), Some(t)) if f != t => Ok((f, t)),
        _ => Err(format!("{text:?} is not HH:MM-HH:MM with two different times")),
    }
}

fn in_window(minute: u32, from: u32, to: u32) -> bool {
    if from < to { (from..to).contains(&minute) } else { minute >= from || minute < to }
}

/// What a delivery says about the worker beside the alert.
#[derive(Debug, Clone, Default)]
pub struct WorkerContext {
    pub worker_type: String,
    pub owner: String,
}

/// The versioned webhook body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WebhookBody {
    pub version: String,
    pub delivery_id: String,
    pub alert_key: String,
    /// `firing` or `resolved`.
    pub status: String,
    pub worker: String,
    pub kind: String,
    pub severity: String,
    pub worker_type: String,
    pub owner: String,
    pub summary: String,
    pub evidence: Value,
    pub starts_at: String,
    pub ends_at: Option<String>,
    pub dashboard_url: Option<String>,
}

pub fn dashboard_link(base: Option<&str>, worker: &str) -> Option<String> {
    base.map(|b| format!("{}/#/workers/{worker}", b.trim_end_matches('/')))
}

pub fn webhook_body(
    event: &AlertEvent,
    delivery_id: &str,
    worker: &WorkerContext,
    dashboard: Option<&str>,
) -> WebhookBody {
    WebhookBody {
        version: WEBHOOK_VERSION.to_owned(),
        delivery_id: delivery_id.to_owned(),
        alert_key: event.key.clone(),
        status: event.state.as_str().to_owned(),
        worker: event.worker_name.clone(),
        kind: event.kind.clone(),
        severity: event.severity.clone(),
        worker_type: worker.worker_type.clone(),
        owner: worker.owner.clone(),
        summary: event.summary.clone(),
        evidence: event.evidence.clone(),
        starts_at: event.starts_at.to_rfc3339(),
        ends_at: event.ends_at.map(|t| t.to_rfc3339()),
        dashboard_url: dashboard_link(dashboard, &event.worker_name),
    }
}

/// A Slack incoming-webhook body (`text` only, which every Slack-compatible receiver reads).
pub fn slack_body(event: &AlertEvent, dashboard: Option<&str>) -> Value {
    let icon = match (event.state, event.severity.as_str()) {
        (AlertState::Resolved, _) => ":white_check_mark:",
        (_, "CRITICAL") => ":rotating_light:",
        _ => ":warning:",
    };
    let link = dashboard_link(dashboard, &event.worker_name).map(|l| format!(" <{l}|dashboard>")).unwrap_or_default();
    json!({
        "text": format!(
            "{icon} [{}] {} {} on {}: {}{link}",
            event.state.as_str().to_uppercase(),
            event.severity,
            event.kind,
            event.worker_name,
            event.summary
        )
    })
}

/// One alert in Alertmanager's `POST /api/v2/alerts` body. A firing alert ends at `valid_until`
/// unless re-sent (as Prometheus does); a resolved one at its resolution.
pub fn alertmanager_alert(
    event: &AlertEvent,
    worker: &WorkerContext,
    dashboard: Option<&str>,
    valid_until: DateTime<Utc>,
) -> Value {
    let mut labels = json!({
        "alertname": format!("Runwarden{}", camel(&event.kind)),
        "kind": event.kind,
        "worker": event.worker_name,
        "severity": event.severity.to_ascii_lowercase(),
        "source": "runwarden",
    });
    for (name, value) in [("worker_type", &worker.worker_type), ("owner", &worker.owner)] {
        if !value.is_empty() {
            labels[name] = json!(value);
        }
    }
    let ends_at = match event.state {
        AlertState::Firing => valid_until,
        AlertState::Resolved => event.ends_at.unwrap_or(valid_until),
    };
    let mut alert = json!({
        "labels": labels,
        "annotations": {
            "summary": event.summary,
            "evidence": event.evidence.to_string(),
        },
        "startsAt": event.starts_at.to_rfc3339(),
        "endsAt": ends_at.to_rfc3339(),
    });
    if let Some(link) = dashboard_link(dashboard, &event.worker_name) {
        alert["annotations"]["dashboard"] = json!(link);
        alert["generatorURL"] = json!(link);
    }
    alert
}

/// `DURATION_SPIKE` → `DurationSpike`.
fn camel(kind: &str) -> String {
    kind.split('_')
        .map(|part| {
            let lower = part.to_ascii_lowercase();
            let mut chars = lower.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

/// The signature header's value for `body` sent at `timestamp` (unix seconds).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={digest}")
}

/// What a receiver does: checks the signature and that it is at most `tolerance_secs` old.
pub fn verify_signature(secret: &str, header: &str, body: &[u8], now: i64, tolerance_secs: i64) -> bool {
    let mut timestamp = None;
    let mut given = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => given = Some(v),
            _ => {}
        }
    }
    let (Some(t), Some(given)) = (timestamp, given) else { return false };
    if (now - t).abs() > tolerance_secs {
        return false;
    }
    let expected = signature(secret, t, body);
    let expected = expected.rsplit("v1=").next().unwrap_or_default();
    use subtle::ConstantTimeEq;
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// Seconds before attempt `attempts + 1`: `initial × 2^(attempts-1)`, at most `max`.
pub fn backoff(initial: f64, max: f64, attempts: u32) -> f64 {
    (initial * 2f64.powi(attempts.saturating_sub(1).min(30) as i32)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        chrono::NaiveDate::from_ymd_opt(2026, 11, 28)
            .and_then(|d| d.and_hms_opt(h, m, 0))
            .map(|t| t.and_utc())
            .expect("time")
    }

    fn spike(worker: &str, severity: &str) -> AlertEvent {
        AlertEvent::firing(worker, "DURATION_SPIKE", severity, "slow".into(), json!({"value": 9000}), at(12, 0))
    }

    #[test]
    fn rules_filter_by_severity_kind_worker_and_quiet_hours() {
        let rules = vec![
            Rule { channel: "oncall".into(), min_severity: Some("CRITICAL".into()), ..Default::default() },
            Rule {
                channel: "oncall".into(),
                kinds: vec!["DURATION_SPIKE".into()],
                worker_prefix: Some("intel_".into()),
                ..Default::default()
            },
            Rule { channel: "night".into(), quiet_hours: Some("22:00-07:00".into()), ..Default::default() },
        ];
        assert!(channel_gets("oncall", &rules, &spike("a", "CRITICAL"), at(12, 0), 1));
        assert!(channel_gets("oncall", &rules, &spike("intel_x", "WARNING"), at(12, 0), 1));
        assert!(!channel_gets("oncall", &rules, &spike("other", "WARNING"), at(12, 0), 1));
        assert!(channel_gets("everything", &rules, &spike("other", "INFO"), at(12, 0), 1), "no rules: everything");
        assert!(!channel_gets("night", &rules, &spike("a", "CRITICAL"), at(23, 30), 1));
        assert!(!channel_gets("night", &rules, &spike("a", "CRITICAL"), at(3, 0), 1));
        assert!(channel_gets("night", &rules, &spike("a", "CRITICAL"), at(7, 0), 1));
        let patient = [Rule { channel: "slow".into(), after_consecutive: Some(3), ..Default::default() }];
        assert!(!channel_gets("slow", &patient, &spike("a", "CRITICAL"), at(12, 0), 2));
        assert!(channel_gets("slow", &patient, &spike("a", "CRITICAL"), at(12, 0), 3));
        assert!(Rule { channel: "x".into(), after_consecutive: Some(0), ..Default::default() }.validate().is_err());
        assert!(
            Rule { channel: "x".into(), quiet_hours: Some("25:00-01:00".into()), ..Default::default() }
                .validate()
                .is_err()
        );
        assert!(
            Rule { channel: "x".into(), min_severity: Some("LOUD".into()), ..Default::default() }.validate().is_err()
        );
    }

    #[test]
    fn health_changes_fire_and_resolve() {
        let t = at(1, 0);
        assert!(AlertEvent::health_change("w", "NEW", "UP", t).is_empty());
        let late = AlertEvent::health_change("w", "UP", "LATE", t);
        assert_eq!(late.len(), 1);
        assert_eq!((late[0].kind.as_str(), late[0].state), ("WORKER_LATE", AlertState::Firing));
        let down = AlertEvent::health_change("w", "LATE", "DOWN", t);
        assert_eq!(
            down.iter().map(|e| (e.kind.as_str(), e.state)).collect::<Vec<_>>(),
            [("WORKER_LATE", AlertState::Resolved), ("WORKER_DOWN", AlertState::Firing)]
        );
        let up = AlertEvent::health_change("w", "DOWN", "UP", t);
        assert_eq!((up[0].kind.as_str(), up[0].state), ("WORKER_DOWN", AlertState::Resolved));
    }

    #[test]
    fn signatures_verify_and_expire() {
        let body = br#"{"a":1}"#;
        let header = signature("s3cret", 1_000, body);
        assert!(verify_signature("s3cret", &header, body, 1_100, 300));
        assert!(!verify_signature("s3cret", &header, body, 2_000, 300), "replayed later");
        assert!(!verify_signature("other", &header, body, 1_100, 300));
        assert!(!verify_signature("s3cret", &header, br#"{"a":2}"#, 1_100, 300));
        assert!(!verify_signature("s3cret", "garbage", body, 1_100, 300));
    }

    #[test]
    fn alertmanager_alerts_carry_labels_and_ends() {
        let worker = WorkerContext { worker_type: "etl".into(), owner: "data".into() };
        let until = at(13, 0);
        let firing = alertmanager_alert(&spike("w", "WARNING"), &worker, Some("http://rw/"), until);
        assert_eq!(firing["labels"]["alertname"], "RunwardenDurationSpike");
        assert_eq!(firing["labels"]["severity"], "warning");
        assert_eq!(firing["labels"]["owner"], "data");
        assert_eq!(firing["endsAt"], until.to_rfc3339());
        assert_eq!(firing["annotations"]["dashboard"], "http://rw/#/workers/w");
        let resolved =
            alertmanager_alert(&AlertEvent::resolved("w", "DURATION_SPIKE", at(12, 30)), &worker, None, until);
        assert_eq!(resolved["endsAt"], at(12, 30).to_rfc3339());
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(1.0, 300.0, 1), 1.0);
        assert_eq!(backoff(1.0, 300.0, 4), 8.0);
        assert_eq!(backoff(1.0, 300.0, 40), 300.0);
    }
}
