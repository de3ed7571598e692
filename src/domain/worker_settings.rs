//! What an operator declares about a worker through `UpsertWorker`: its expected schedule, grace,
//! pause state, owner, description and labels. This module validates the request (one
//! [`FieldViolation`] per broken rule, naming the field) and turns the stored columns back into a
//! [`Schedule`]. Pure: no I/O, no clock.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

use super::{
    cron,
    schedule::{self, Expected, HealthInput, INFER_GRACE_FRACTION, INFER_MIN_GRACE_SECS, Schedule, WorkerHealth},
    validation::{FieldViolation, MAX_WORKER_TYPE, check_worker_name_field},
};
use crate::proto::v1::UpsertWorkerRequest;

/// Shortest declared interval: one minute (cron's resolution).
pub const MIN_INTERVAL_SECS: i64 = 60;
/// Longest declared interval: 366 days.
pub const MAX_INTERVAL_SECS: i64 = 366 * 86_400;
/// Longest grace: 30 days.
pub const MAX_GRACE_SECS: i64 = 30 * 86_400;
pub const MAX_OWNER: usize = 200;
pub const MAX_DESCRIPTION: usize = 2_000;
pub const MAX_LABELS: usize = 32;
pub const MAX_LABEL_KEY: usize = 63;
pub const MAX_LABEL_VALUE: usize = 256;

/// A validated `UpsertWorker` request.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerSettings {
    pub worker_name: String,
    /// `None` keeps the stored type.
    pub worker_type: Option<String>,
    /// The declared schedule as stored: interval seconds or cron text (neither: no schedule).
    pub interval_secs: Option<i64>,
    pub cron: Option<String>,
    pub grace_secs: Option<i64>,
    pub owner: String,
    pub description: String,
    pub labels: BTreeMap<String, String>,
    /// `None` keeps the stored pause state.
    pub paused: Option<bool>,
}

/// Validates `request`, reporting every broken rule at once.
pub fn validate(request: &UpsertWorkerRequest) -> Result<WorkerSettings, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    if let Err(v) = check_worker_name_field("worker_name", &request.worker_name) {
        violations.push(v);
    }
    let worker_type = request.worker_type.trim();
    if worker_type.len() > MAX_WORKER_TYPE {
        violations.push(FieldViolation::new(
            "worker_type",
            format!("must be at most {MAX_WORKER_TYPE} characters, got {}", worker_type.len()),
        ));
    }
    let (mut interval_secs, mut cron_text) = (None, None);
    match parse_expected(&request.expected_interval) {
        Ok(None) => {}
        Ok(Some(Expected::Every(interval))) => interval_secs = Some(interval.num_seconds()),
        Ok(Some(Expected::Cron(_))) => cron_text = Some(request.expected_interval.trim().to_owned()),
        Err(why) => violations.push(FieldViolation::new("expected_interval", why)),
    }
    if let Some(grace) = request.grace_seconds
        && !(0..=MAX_GRACE_SECS).contains(&grace)
    {
        violations.push(FieldViolation::new(
            "grace_seconds",
            format!("must be between 0 and {MAX_GRACE_SECS} (30 days), got {grace}"),
        ));
    }
    if request.grace_seconds.is_some() && request.expected_interval.trim().is_empty() {
        violations.push(FieldViolation::new("grace_seconds", "needs expected_interval: grace applies to a schedule"));
    }
    if request.owner.chars().count() > MAX_OWNER {
        violations.push(FieldViolation::new("owner", format!("must be at most {MAX_OWNER} characters")));
    }
    if request.description.chars().count() > MAX_DESCRIPTION {
        violations.push(FieldViolation::new("description", format!("must be at most {MAX_DESCRIPTION} characters")));
    }
    if request.labels.len() > MAX_LABELS {
        violations
            .push(FieldViolation::new("labels", format!("at most {MAX_LABELS} labels, got {}", request.labels.len())));
    }
    let mut keys: Vec<&String> = request.labels.keys().collect();
    keys.sort();
    for key in keys {
        let valid_key = !key.is_empty()
            && key.len() <= MAX_LABEL_KEY
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !valid_key {
            violations.push(FieldViolation::new(
                format!("labels[{key:?}]"),
                format!("key must be 1-{MAX_LABEL_KEY} characters of A-Z, a-z, 0-9, '_', '.', '-'"),
            ));
        } else if request.labels[key].chars().count() > MAX_LABEL_VALUE {
            violations.push(FieldViolation::new(
                format!("labels[{key:?}]"),
                format!("value must be at most {MAX_LABEL_VALUE} characters"),
            ));
        }
    }
    if !violations.is_empty() {
        return Err(violations);
    }
    Ok(WorkerSettings {
        worker_name: request.worker_name.clone(),
        worker_type: (!worker_type.is_empty()).then(|| worker_type.to_owned()),
        interval_secs,
        cron: cron_text,
        grace_secs: request.grace_seconds,
        owner: request.owner.trim().to_owned(),
        description: request.description.trim().to_owned(),
        labels: request.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        paused: request.paused,
    })
}

/// Parses a declared expected interval: empty (no schedule), whole seconds (`"3600"`) or a
/// five-field cron expression in UTC. The error says which rule the text broke.
pub fn parse_expected(text: &str) -> Result<Option<Expected>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = text.parse().map_err(|_| format!("{text} is too large"))?;
        if !(MIN_INTERVAL_SECS..=MAX_INTERVAL_SECS).contains(&secs) {
            return Err(format!(
                "an interval must be between {MIN_INTERVAL_SECS} and {MAX_INTERVAL_SECS} seconds (366 days), got {secs}"
            ));
        }
        return Ok(Some(Expected::Every(TimeDelta::seconds(secs))));
    }
    match cron::parse(text) {
        Ok(schedule) => Ok(Some(Expected::Cron(schedule))),
        Err(e) => Err(format!("is neither whole seconds nor a valid cron expression: {e}")),
    }
}

/// The grace a schedule gets when none is declared: 10 % of the expected gap, at least 60 s. For a
/// cron, the gap is the shortest between its next fire times after `reference`.
pub fn default_grace(expected: &Expected, reference: DateTime<Utc>) -> TimeDelta {
    let gap_secs = match expected {
        Expected::Every(interval) => interval.num_seconds(),
        Expected::Cron(cron) => {
            let mut fire = cron.next_after(reference);
            let mut shortest: Option<i64> = None;
            for _ in 0..8 {
                let Some(current) = fire else { break };
                let Some(next) = cron.next_after(current) else { break };
                let gap = (next - current).num_seconds();
                shortest = Some(shortest.map_or(gap, |s| s.min(gap)));
                fire = Some(next);
            }
            shortest.unwrap_or(0)
        }
    };
    TimeDelta::seconds(((gap_secs as f64 * INFER_GRACE_FRACTION).round() as i64).max(INFER_MIN_GRACE_SECS))
}

/// The declared schedule stored in a worker's columns, or `None` when there is none (or it no longer
/// parses, which validation on the way in prevents).
pub fn declared(
    interval_secs: Option<i64>,
    cron_text: Option<&str>,
    grace_secs: Option<i64>,
    paused: bool,
    reference: DateTime<Utc>,
) -> Option<Schedule> {
    let expected = match (interval_secs, cron_text) {
        (Some(secs), _) if secs > 0 => Expected::Every(TimeDelta::try_seconds(secs)?),
        (_, Some(text)) => Expected::Cron(cron::parse(text).ok()?),
        _ => return None,
    };
    let grace = match grace_secs {
        Some(secs) => TimeDelta::try_seconds(secs.max(0))?,
        None => default_grace(&expected, reference),
    };
    Some(Schedule { expected, grace, inferred: false, paused })
}

/// What runwarden concludes about a worker at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// The declared schedule, or else one inferred from regular starts (`inferred` set).
    pub schedule: Option<Schedule>,
    pub health: WorkerHealth,
    /// Where slot counting starts: the later of the last run start and the last resume.
    pub anchor: Option<DateTime<Utc>>,
    /// When the next report is due (next slot + grace); `None` without a schedule or while paused.
    pub next_deadline: Option<DateTime<Utc>>,
}

/// What is known about a worker, from its row.
#[derive(Clone, Debug, Default)]
pub struct WorkerFacts<'a> {
    pub declared: Option<Schedule>,
    pub paused: bool,
    /// Recent run starts, any order (for inference).
    pub recent_starts: &'a [DateTime<Utc>],
    pub last_run_started: Option<DateTime<Utc>>,
    pub resumed_at: Option<DateTime<Utc>>,
}

/// The worker's schedule (declared, else inferred), health and next deadline at `now`. A paused
/// worker is `Paused` whether or not it has a schedule; a worker that never ran is `New`.
pub fn evaluate(facts: &WorkerFacts<'_>, now: DateTime<Utc>) -> Verdict {
    let mut schedule = facts.declared.clone().or_else(|| schedule::infer(facts.recent_starts));
    if let Some(s) = schedule.as_mut() {
        s.paused = facts.paused;
    }
    let anchor = facts.last_run_started.and_then(|last| schedule::resume_anchor(Some(last), facts.resumed_at));
    let health = if facts.paused {
        WorkerHealth::Paused
    } else {
        schedule::health(&HealthInput { schedule: schedule.clone(), last_run_started: anchor, first_seen: None }, now)
    };
    let next_deadline = match (&schedule, anchor) {
        (Some(s), Some(anchor)) if !facts.paused => schedule::next_deadline(s, anchor),
        _ => None,
    };
    Verdict { schedule, health, anchor, next_deadline }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn request(expected: &str) -> UpsertWorkerRequest {
        UpsertWorkerRequest {
            worker_name: "intel_news_fetcher".into(),
            expected_interval: expected.into(),
            ..Default::default()
        }
    }

    fn fields(request: &UpsertWorkerRequest) -> Vec<String> {
        validate(request).err().unwrap_or_default().into_iter().map(|v| v.field).collect()
    }

    fn reference() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    #[test]
    fn seconds_and_cron_are_both_accepted() {
        let every = validate(&request("3600")).unwrap();
        assert_eq!((every.interval_secs, every.cron.as_deref()), (Some(3600), None));
        let cron = validate(&request(" 0 3 * * * ")).unwrap();
        assert_eq!((cron.interval_secs, cron.cron.as_deref()), (None, Some("0 3 * * *")));
        let none = validate(&request("")).unwrap();
        assert_eq!((none.interval_secs, none.cron), (None, None));
    }

    #[test]
    fn a_broken_cron_names_the_field_and_the_cron_field() {
        let errors = validate(&request("0 24 * * *")).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "expected_interval");
        assert!(errors[0].description.contains("hour"), "{}", errors[0].description);
    }

    #[test]
    fn every_broken_rule_is_reported() {
        let mut r = request("30");
        r.worker_name = "bad name".into();
        r.grace_seconds = Some(-1);
        r.labels.insert("".into(), "x".into());
        r.labels.insert("team".into(), "x".repeat(MAX_LABEL_VALUE + 1));
        assert_eq!(
            fields(&r),
            ["worker_name", "expected_interval", "grace_seconds", "labels[\"\"]", "labels[\"team\"]"]
        );
    }

    #[test]
    fn grace_without_a_schedule_is_refused() {
        let mut r = request("");
        r.grace_seconds = Some(60);
        assert_eq!(fields(&r), ["grace_seconds"]);
    }

    #[test]
    fn default_grace_is_a_tenth_of_the_gap_at_least_a_minute() {
        let hourly = parse_expected("3600").unwrap().unwrap();
        assert_eq!(default_grace(&hourly, reference()), TimeDelta::seconds(360));
        let minutely = parse_expected("60").unwrap().unwrap();
        assert_eq!(default_grace(&minutely, reference()), TimeDelta::seconds(60));
        let daily = parse_expected("0 3 * * *").unwrap().unwrap();
        assert_eq!(default_grace(&daily, reference()), TimeDelta::seconds(8640));
        let quarter = parse_expected("*/15 * * * MON-FRI").unwrap().unwrap();
        assert_eq!(default_grace(&quarter, reference()), TimeDelta::seconds(90));
    }

    #[test]
    fn evaluate_follows_the_declared_schedule_and_the_resume() {
        let t0 = reference();
        let hourly = declared(Some(3600), None, Some(300), false, t0);
        let facts = |paused, resumed_at| WorkerFacts {
            declared: hourly.clone(),
            paused,
            recent_starts: &[],
            last_run_started: Some(t0),
            resumed_at,
        };
        let at = |mins| t0 + TimeDelta::minutes(mins);
        assert_eq!(evaluate(&facts(false, None), at(64)).health, WorkerHealth::Up);
        assert_eq!(evaluate(&facts(false, None), at(64)).next_deadline, Some(at(65)));
        assert_eq!(evaluate(&facts(false, None), at(66)).health, WorkerHealth::Late);
        assert_eq!(evaluate(&facts(false, None), at(126)).health, WorkerHealth::Down);
        assert_eq!(evaluate(&facts(true, None), at(500)).health, WorkerHealth::Paused);
        assert_eq!(evaluate(&facts(true, None), at(500)).next_deadline, None);
        // Resumed at +8 h: one interval plus grace from there before it is late.
        let resumed = facts(false, Some(at(480)));
        assert_eq!(evaluate(&resumed, at(544)).health, WorkerHealth::Up);
        assert_eq!(evaluate(&resumed, at(546)).health, WorkerHealth::Late);
    }

    #[test]
    fn evaluate_infers_when_nothing_is_declared() {
        let t0 = reference();
        let starts: Vec<_> = (0..10).map(|i| t0 + TimeDelta::minutes(10 * i)).collect();
        let facts =
            WorkerFacts { recent_starts: &starts, last_run_started: starts.last().copied(), ..Default::default() };
        let verdict = evaluate(&facts, t0 + TimeDelta::minutes(95));
        let schedule = verdict.schedule.unwrap();
        assert!(schedule.inferred);
        assert_eq!(schedule.expected, Expected::Every(TimeDelta::minutes(10)));
        assert_eq!(verdict.health, WorkerHealth::Up);
        assert_eq!(evaluate(&facts, t0 + TimeDelta::minutes(105)).health, WorkerHealth::Late);
        let never = WorkerFacts::default();
        assert_eq!(evaluate(&never, t0).health, WorkerHealth::New);
        assert_eq!(
            evaluate(&WorkerFacts { last_run_started: Some(t0), ..Default::default() }, t0).health,
            WorkerHealth::Up
        );
    }

    proptest::proptest! {
        /// Whatever a client sends, validation answers without panicking, and what it accepts turns
        /// back into the schedule it declared.
        #[test]
        fn any_request_is_judged_and_accepted_schedules_round_trip(
            name in ".{0,140}",
            expected in proptest::prop_oneof![".{0,40}", "[0-9]{1,12}", "([0-9*/,-]{1,6} ){4}[0-9*/,-]{1,6}"],
            grace in proptest::option::of(proptest::prelude::any::<i64>()),
            labels in proptest::collection::btree_map(".{0,70}", ".{0,300}", 0..40),
            paused in proptest::option::of(proptest::prelude::any::<bool>()),
        ) {
            let request = UpsertWorkerRequest {
                worker_name: name,
                expected_interval: expected,
                grace_seconds: grace,
                labels: labels.into_iter().collect(),
                paused,
                ..Default::default()
            };
            if let Ok(settings) = validate(&request) {
                let schedule = declared(settings.interval_secs, settings.cron.as_deref(), settings.grace_secs, false, reference());
                proptest::prop_assert_eq!(schedule.is_some(), settings.interval_secs.is_some() || settings.cron.is_some());
            }
        }
    }

    #[test]
    fn declared_round_trips_the_columns() {
        let s = declared(Some(600), None, Some(30), false, reference()).unwrap();
        assert_eq!(
            (s.expected, s.grace, s.inferred, s.paused),
            (Expected::Every(TimeDelta::seconds(600)), TimeDelta::seconds(30), false, false)
        );
        let c = declared(None, Some("0 * * * *"), None, true, reference()).unwrap();
        assert!(matches!(c.expected, Expected::Cron(_)));
        assert_eq!((c.grace, c.paused), (TimeDelta::seconds(360), true));
        assert_eq!(declared(None, None, None, false, reference()), None);
    }
}
