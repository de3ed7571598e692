//! Stream guardian: the pure decision logic behind runwarden's long-lived stream monitoring.
//!
//! This module owns the rules for streaming connections (`generation`, `coach_*`, `profile_*`, and the
//! service's own `watch_health` / `watch_executions`): which stream types and ids are accepted, how a
//! stream is classified at an instant, when a heartbeat is accepted, when a stream is cleaned (removed),
//! and what one periodic tick reports (metrics, warnings, state transitions, ids to delete).
//!
//! It performs **no I/O**: it never reads the clock (every function takes `now`), never touches storage,
//! never logs and never exports metrics. The caller (API handlers and the ticker, which runs every
//! [`GuardianConfig::tick_interval`]) loads [`TrackedStream`] records, calls in here, and persists or
//! exports what comes back. Every function is deterministic and panic-free, also for an invalid config
//! (results are then merely unhelpful; call [`GuardianConfig::validate`] at startup).
//!
//! # Lifecycle
//!
//! ```text
//!  open ─► HEALTHY ──(age > stale_after)──► STALE ──(age > orphan_after)──► ORPHANED ──(> retention)──► removed
//!             ▲                               │                               ▲
//!             └────────── heartbeat ──────────┘            owner gone ────────┘ (from HEALTHY or STALE)
//!  close (from any open state) ─► CLOSED ──(now - closed_at > retention)──► removed
//! ```
//!
//! # Classification ([`state_of`])
//!
//! With `age = now - last_heartbeat`, the first matching rule wins:
//!
//! 1. `closed_at` is set → [`StreamState::Closed`] (a client close beats everything, also `owner_gone`).
//! 2. `owner_gone`, or `orphaned_at` is set, or `age > orphan_after` → [`StreamState::Orphaned`].
//!    Orphaned is terminal for an open stream: a set `orphaned_at`/`owner_gone` keeps it orphaned whatever
//!    `last_heartbeat` says.
//! 3. `age > stale_after` → [`StreamState::Stale`].
//! 4. otherwise [`StreamState::Healthy`] (including `age <= 0`, a heartbeat stamped ahead of `now` by skew).
//!
//! Boundaries are strict: a heartbeat exactly `stale_after` old is still healthy, exactly `orphan_after` old
//! is still stale. State is a pure function of the record and `now`, not of ticks: a stream is stale or
//! orphaned the instant its age crosses the threshold, even if no tick has run; ticks only *observe*
//! (transitions, metrics) and *clean*.
//!
//! # Cleaning ([`is_due_for_removal`])
//!
//! Only closed and orphaned streams are ever removed, strictly after `retention`:
//!
//! * Closed: `now - closed_at > retention`.
//! * Orphaned: `now - orphaned_since > retention`, where [`orphaned_since`] is `orphaned_at` if set, else
//!   `last_heartbeat + orphan_after` (the instant age-based orphaning happened). An owner-gone stream without
//!   `orphaned_at` therefore falls back to that instant, which may lie in the future: it is kept longer,
//!   never cleaned early. Use [`TrackedStream::mark_owner_gone`], which stamps `orphaned_at`.
//!
//! A removed stream is listed in [`GuardianTick::remove`], counted in `cleaned_streams` and in no other
//! count. Healthy and stale streams are never removed.
//!
//! # Metrics ([`TickMetrics`], one set per tick, over the streams passed to [`classify`])
//!
//! | name | meaning |
//! |---|---|
//! | `active_streams` | open (not closed) streams that survive this tick: `healthy + stale + orphaned` |
//! | `healthy_streams` / `stale_streams` | streams in that state (never removed) |
//! | `orphaned_streams` | orphaned streams **not** removed this tick |
//! | `cleaned_streams` | streams removed this tick (closed or orphaned) |
//! | `orphan_rate` | `orphaned_streams / active_streams`; `0.0` when `active_streams == 0` |
//! | `orphaned_by_type` | `orphaned_streams` split by `stream_type`; every allowed type is present (0 when none, so gauges reset), plus any unknown type that has orphans |
//!
//! Invariants: `active == healthy + stale + orphaned`; `total == active + closed_kept + cleaned`;
//! `sum(orphaned_by_type) == orphaned`. Since `orphaned <= active`, `0 <= orphan_rate <= 1`: exactly `1.0`
//! when every active stream is orphaned, exactly `0.0` with no active stream (no streams, or only closed
//! and removed ones) — never NaN. `orphan_rate` is computed as `orphaned as f64 / active as f64`, so `k/10k`
//! is bit-identical to the literal `0.1`.
//!
//! # Warnings ([`Warning`])
//!
//! Strictly above the threshold: `stale_streams > stale_warning` (10), `orphaned_streams > orphaned_warning`
//! (5), `orphan_rate > orphan_rate_warning` (0.1). So 10 stale, 5 orphaned or a rate of exactly 0.1 warn
//! nothing; 11, 6 and anything above 0.1 do. Messages: `"stale_streams 11 > 10"`,
//! `"orphaned_streams 6 > 5"`, `"orphan_rate 0.250 > 0.100"`. Order: stale, orphaned, rate.
//!
//! # Transitions
//!
//! [`classify`] compares each stream's state with `previous` (normally the last tick's
//! [`GuardianTick::states`]). A stream absent from `previous` counts as [`StreamState::Healthy`] (streams are
//! born healthy), so a restarted caller with an empty map learns every non-healthy stream once. A stream
//! whose state equals its previous one yields no transition. A transition to `Orphaned` for a record
//! without `orphaned_at` carries [`Transition::orphaned_at`] = [`orphaned_since`] for the caller to persist;
//! persisting it is idempotent (it is the value cleaning already assumes). Transitions, `remove` and
//! `states` are ordered by `stream_id`, so output does not depend on input order. `stream_id`s are assumed
//! unique (the store's key); entries of `previous` for unknown ids are ignored.
//!
//! # Heartbeats ([`heartbeat`])
//!
//! * Closed → [`HeartbeatRefusal::Closed`]; the caller answers NOT_FOUND, as for a removed (unknown) id.
//! * Orphaned at `now` (owner gone, `orphaned_at` set, or `age > orphan_after` even if no tick noticed yet)
//!   → [`HeartbeatRefusal::Orphaned`]. Decision: the guardian has given up on it and may already have told
//!   the owner; reviving it would race cleaning. The client must open a new stream under a new id; the old
//!   id stays taken until cleaned.
//! * Otherwise `last_heartbeat = max(last_heartbeat, now)` (never moves back on skewed or reordered calls),
//!   which turns a stale stream healthy.
//!
//! # Validation
//!
//! * [`validate_stream_id`]: 1–128 chars of `[A-Za-z0-9_.:-]`.
//! * [`validate_stream_type`]: one of [`BUILTIN_STREAM_TYPES`] or `extra_stream_types` (case-sensitive); the
//!   error lists the allowed types. Classification itself accepts any type (records may predate a config).
//! * [`GuardianConfig::validate`]: `tick_interval > 0`, `0 < stale_after < orphan_after`, `retention > 0`,
//!   `0 < flush_interval <= stale_after / 2`,
//!   `orphan_rate_warning` finite in `0..=1`, extra type names `[a-z][a-z0-9_]{0,63}`, no duplicates
//!   (among themselves or with the builtins). All problems are reported, joined by `"; "`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// Stream types every deployment accepts; [`GuardianConfig::extra_stream_types`] adds more.
pub const BUILTIN_STREAM_TYPES: [&str; 7] = [
    "generation",
    "coach_start",
    "coach_continue",
    "profile_start",
    "profile_continue",
    "watch_health",
    "watch_executions",
];

/// Maximum length of a stream id, in characters.
pub const MAX_STREAM_ID_LEN: usize = 128;

/// Maximum length of an extra stream type name, in characters.
pub const MAX_STREAM_TYPE_LEN: usize = 64;

/// Tunables of the guardian. [`Default`] gives the documented defaults; check with [`GuardianConfig::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct GuardianConfig {
    /// How often the caller runs [`classify`] (default 10 s). Not used by the logic itself.
    pub tick_interval: Duration,
    /// How often accepted heartbeats are written to the database (default 2 s). Not used by the
    /// logic itself; must stay well under `stale_after`, since other replicas see a heartbeat
    /// only once it is written.
    pub flush_interval: Duration,
    /// A stream is stale when its last heartbeat is older than this (default 30 s).
    pub stale_after: TimeDelta,
    /// A stream is orphaned when its last heartbeat is older than this (default 2 min).
    pub orphan_after: TimeDelta,
    /// Closed/orphaned streams are removed once closed/orphaned for longer than this (default 5 min).
    pub retention: TimeDelta,
    /// Warn when `stale_streams` exceeds this (default 10).
    pub stale_warning: u64,
    /// Warn when `orphaned_streams` exceeds this (default 5).
    pub orphaned_warning: u64,
    /// Warn when `orphan_rate` exceeds this (default 0.1).
    pub orphan_rate_warning: f64,
    /// Stream types accepted on top of [`BUILTIN_STREAM_TYPES`].
    pub extra_stream_types: Vec<String>,
}

impl Default for GuardianConfig {
    fn default() -> Self {
        Self {
            tick_interval: Duration::from_secs(10),
            flush_interval: Duration::from_secs(2),
            stale_after: TimeDelta::seconds(30),
            orphan_after: TimeDelta::minutes(2),
            retention: TimeDelta::minutes(5),
            stale_warning: 10,
            orphaned_warning: 5,
            orphan_rate_warning: 0.1,
            extra_stream_types: Vec::new(),
        }
    }
}

impl GuardianConfig {
    /// Checks the rules listed in the module docs; the error names every problem found.
    pub fn validate(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        if self.tick_interval.is_zero() {
            errors.push("tick_interval must be > 0".to_string());
        }
        if self.stale_after <= TimeDelta::zero() {
            errors.push(format!("stale_after must be > 0 (got {})", self.stale_after));
        }
        let flush = TimeDelta::from_std(self.flush_interval).unwrap_or(TimeDelta::MAX);
        if self.flush_interval.is_zero() || flush * 2 > self.stale_after {
            errors.push(format!(
                "flush_interval must be > 0 and at most half of stale_after ({}), got {:?}",
                self.stale_after, self.flush_interval
            ));
        }
        if self.orphan_after <= self.stale_after {
            errors.push(format!(
                "orphan_after ({}) must be greater than stale_after ({})",
                self.orphan_after, self.stale_after
            ));
        }
        if self.retention <= TimeDelta::zero() {
            errors.push(format!("retention must be > 0 (got {})", self.retention));
        }
        if !(self.orphan_rate_warning.is_finite() && (0.0..=1.0).contains(&self.orphan_rate_warning)) {
            errors.push(format!("orphan_rate_warning must be within 0..=1 (got {})", self.orphan_rate_warning));
        }
        for (i, name) in self.extra_stream_types.iter().enumerate() {
            if let Err(e) = validate_type_name(name) {
                errors.push(e);
            } else if BUILTIN_STREAM_TYPES.contains(&name.as_str()) {
                errors.push(format!("extra stream type {name:?} is already built in"));
            } else if self.extra_stream_types[..i].contains(name) {
                errors.push(format!("extra stream type {name:?} is listed twice"));
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
    }

    /// Whether `t` is a builtin or configured extra stream type (exact, case-sensitive match).
    pub fn is_allowed_type(&self, t: &str) -> bool {
        BUILTIN_STREAM_TYPES.contains(&t) || self.extra_stream_types.iter().any(|x| x == t)
    }

    /// Builtins in their fixed order, then extras in configured order, without duplicates.
    pub fn allowed_types(&self) -> Vec<String> {
        let mut out: Vec<String> = BUILTIN_STREAM_TYPES.iter().map(|s| s.to_string()).collect();
        for t in &self.extra_stream_types {
            if !out.contains(t) {
                out.push(t.clone());
            }
        }
        out
    }
}

fn validate_type_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !first_ok || !rest_ok || name.len() > MAX_STREAM_TYPE_LEN {
        return Err(format!(
            "invalid extra stream type {name:?}: must match [a-z][a-z0-9_]* and be at most {MAX_STREAM_TYPE_LEN} chars"
        ));
    }
    Ok(())
}

/// Classification of a stream at an instant (see module docs for the rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamState {
    /// Heartbeat no older than `stale_after`.
    Healthy,
    /// Heartbeat older than `stale_after`, not older than `orphan_after`.
    Stale,
    /// Heartbeat older than `orphan_after`, or owner gone, or already marked orphaned.
    Orphaned,
    /// Closed by the client.
    Closed,
}

impl StreamState {
    /// Upper-case wire/storage name: `HEALTHY`, `STALE`, `ORPHANED`, `CLOSED`.
    pub fn as_str(&self) -> &'static str {
        match self {
            StreamState::Healthy => "HEALTHY",
            StreamState::Stale => "STALE",
            StreamState::Orphaned => "ORPHANED",
            StreamState::Closed => "CLOSED",
        }
    }

    /// Inverse of [`StreamState::as_str`] (exact match).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "HEALTHY" => Some(StreamState::Healthy),
            "STALE" => Some(StreamState::Stale),
            "ORPHANED" => Some(StreamState::Orphaned),
            "CLOSED" => Some(StreamState::Closed),
            _ => None,
        }
    }
}

impl fmt::Display for StreamState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stream as persisted by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedStream {
    /// Unique id chosen by the client (see [`validate_stream_id`]).
    pub stream_id: String,
    /// One of the allowed types (see [`validate_stream_type`]).
    pub stream_type: String,
    /// Who opened it (a client/session id); used by the caller to mark all of an owner's streams gone.
    pub owner: String,
    /// When it was opened.
    pub opened_at: DateTime<Utc>,
    /// Last accepted heartbeat (initially `opened_at`); drives healthy/stale/orphaned.
    pub last_heartbeat: DateTime<Utc>,
    /// Set when the client closed it; closed streams are never active.
    pub closed_at: Option<DateTime<Utc>>,
    /// Free-form reason given on close.
    pub close_reason: Option<String>,
    /// The owner was declared gone: the stream is orphaned regardless of heartbeats.
    pub owner_gone: bool,
    /// When it became orphaned, as persisted by the caller (see [`Transition::orphaned_at`]).
    pub orphaned_at: Option<DateTime<Utc>>,
}

impl TrackedStream {
    /// A freshly opened stream: healthy, `opened_at = last_heartbeat = now`. Validate id and type first.
    pub fn open(
        stream_id: impl Into<String>,
        stream_type: impl Into<String>,
        owner: impl Into<String>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            stream_id: stream_id.into(),
            stream_type: stream_type.into(),
            owner: owner.into(),
            opened_at: now,
            last_heartbeat: now,
            closed_at: None,
            close_reason: None,
            owner_gone: false,
            orphaned_at: None,
        }
    }

    /// Client close. Returns `false` (and changes nothing) if already closed, so the first close wins.
    /// Closing an orphaned stream is allowed; retention then counts from `closed_at`.
    pub fn close(&mut self, now: DateTime<Utc>, reason: Option<String>) -> bool {
        if self.closed_at.is_some() {
            return false;
        }
        self.closed_at = Some(now);
        self.close_reason = reason;
        true
    }

    /// Declares the owner gone: sets `owner_gone` and, for an open stream without `orphaned_at`, stamps
    /// `orphaned_at` with the earlier of `now` and the age-based orphaning instant. Returns whether the
    /// record changed. No effect on a closed stream beyond the flag.
    pub fn mark_owner_gone(&mut self, now: DateTime<Utc>, config: &GuardianConfig) -> bool {
        let before = (self.owner_gone, self.orphaned_at);
        self.owner_gone = true;
        if self.closed_at.is_none() && self.orphaned_at.is_none() {
            self.orphaned_at = Some(now.min(age_orphaned_at(self, config)));
        }
        before != (self.owner_gone, self.orphaned_at)
    }
}

/// Everything one tick decides. Apply `remove`, persist `transitions[..].orphaned_at`, export `metrics`,
/// log `warnings`, and pass `states` (see [`GuardianTick::previous_states`]) to the next tick.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardianTick {
    /// The `now` this tick was computed for.
    pub at: DateTime<Utc>,
    /// Gauges for this tick.
    pub metrics: TickMetrics,
    /// Thresholds exceeded, in the order stale, orphaned, rate.
    pub warnings: Vec<Warning>,
    /// Streams whose state differs from `previous`, by `stream_id`.
    pub transitions: Vec<Transition>,
    /// Stream ids to delete, by `stream_id`.
    pub remove: Vec<String>,
    /// State of every stream that was not removed.
    pub states: BTreeMap<String, StreamState>,
}

impl GuardianTick {
    /// `states` as the `previous` map for the next [`classify`] call.
    pub fn previous_states(&self) -> HashMap<String, StreamState> {
        self.states.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// Per-tick gauges; see the metrics table in the module docs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TickMetrics {
    /// Open streams kept this tick: `healthy + stale + orphaned` (closed and removed excluded).
    pub active_streams: u64,
    /// Streams with a heartbeat no older than `stale_after`.
    pub healthy_streams: u64,
    /// Streams with a heartbeat older than `stale_after`, not orphaned.
    pub stale_streams: u64,
    /// Orphaned streams not removed this tick.
    pub orphaned_streams: u64,
    /// Closed or orphaned streams removed this tick.
    pub cleaned_streams: u64,
    /// `orphaned / active`, `0.0` when `active == 0`; always within `0..=1`.
    pub orphan_rate: f64,
    /// `orphaned_streams` by stream type; every allowed type present, unknown types only when non-zero.
    pub orphaned_by_type: BTreeMap<String, u64>,
}

/// Which threshold a [`Warning`] crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WarningKind {
    /// `stale_streams > stale_warning`.
    TooManyStale,
    /// `orphaned_streams > orphaned_warning`.
    TooManyOrphaned,
    /// `orphan_rate > orphan_rate_warning`.
    OrphanRateHigh,
}

impl WarningKind {
    /// `TOO_MANY_STALE`, `TOO_MANY_ORPHANED`, `ORPHAN_RATE_HIGH`.
    pub fn as_str(&self) -> &'static str {
        match self {
            WarningKind::TooManyStale => "TOO_MANY_STALE",
            WarningKind::TooManyOrphaned => "TOO_MANY_ORPHANED",
            WarningKind::OrphanRateHigh => "ORPHAN_RATE_HIGH",
        }
    }
}

/// A threshold strictly exceeded in a tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    /// Which threshold.
    pub kind: WarningKind,
    /// The observed metric value.
    pub value: f64,
    /// The configured threshold it exceeded.
    pub threshold: f64,
    /// E.g. `"stale_streams 12 > 10"`.
    pub message: String,
}

/// A state change observed by [`classify`].
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The stream that changed.
    pub stream_id: String,
    /// Its type (for per-type logging/metrics).
    pub stream_type: String,
    /// State in `previous` (`Healthy` when absent).
    pub from: StreamState,
    /// State at this tick's `now`.
    pub to: StreamState,
    /// Set only when `to == Orphaned` and the record has no `orphaned_at`: the value to persist.
    pub orphaned_at: Option<DateTime<Utc>>,
}

/// Why [`heartbeat`] refused; the stream is left unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeartbeatRefusal {
    /// Closed by the client; answer NOT_FOUND.
    Closed,
    /// Orphaned; the client must open a new stream.
    Orphaned,
}

impl fmt::Display for HeartbeatRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeartbeatRefusal::Closed => f.write_str("stream is closed"),
            HeartbeatRefusal::Orphaned => f.write_str("stream is orphaned; open a new stream"),
        }
    }
}

impl std::error::Error for HeartbeatRefusal {}

/// `last_heartbeat + orphan_after`, saturating at the maximum representable instant.
fn age_orphaned_at(stream: &TrackedStream, config: &GuardianConfig) -> DateTime<Utc> {
    stream.last_heartbeat.checked_add_signed(config.orphan_after).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Classifies one stream at `now` (rules in the module docs).
pub fn state_of(stream: &TrackedStream, now: DateTime<Utc>, config: &GuardianConfig) -> StreamState {
    if stream.closed_at.is_some() {
        return StreamState::Closed;
    }
    // signed_duration_since cannot overflow: the DateTime range is far inside the TimeDelta range.
    let age = now.signed_duration_since(stream.last_heartbeat);
    if stream.owner_gone || stream.orphaned_at.is_some() || age > config.orphan_after {
        StreamState::Orphaned
    } else if age > config.stale_after {
        StreamState::Stale
    } else {
        StreamState::Healthy
    }
}

/// The instant an orphaned stream counts as orphaned since: `orphaned_at`, else
/// `last_heartbeat + orphan_after`. Meaningful only for streams that are orphaned.
pub fn orphaned_since(stream: &TrackedStream, config: &GuardianConfig) -> DateTime<Utc> {
    stream.orphaned_at.unwrap_or_else(|| age_orphaned_at(stream, config))
}

/// Whether the stream is cleaned at `now`: closed or orphaned for strictly longer than `retention`.
pub fn is_due_for_removal(stream: &TrackedStream, now: DateTime<Utc>, config: &GuardianConfig) -> bool {
    let since = match state_of(stream, now, config) {
        StreamState::Closed => match stream.closed_at {
            Some(t) => t,
            None => return false,
        },
        StreamState::Orphaned => orphaned_since(stream, config),
        StreamState::Healthy | StreamState::Stale => return false,
    };
    now.signed_duration_since(since) > config.retention
}

/// Classifies every stream at `now` against `previous` states; see [`GuardianTick`] and the module docs.
pub fn classify(
    streams: &[TrackedStream],
    previous: &HashMap<String, StreamState>,
    now: DateTime<Utc>,
    config: &GuardianConfig,
) -> GuardianTick {
    let mut m = TickMetrics {
        orphaned_by_type: config.allowed_types().into_iter().map(|t| (t, 0)).collect(),
        ..TickMetrics::default()
    };
    let mut transitions = Vec::new();
    let mut remove = Vec::new();
    let mut states = BTreeMap::new();

    for s in streams {
        let state = state_of(s, now, config);
        let from = previous.get(&s.stream_id).copied().unwrap_or(StreamState::Healthy);
        if from != state {
            let orphaned_at =
                (state == StreamState::Orphaned && s.orphaned_at.is_none()).then(|| orphaned_since(s, config));
            transitions.push(Transition {
                stream_id: s.stream_id.clone(),
                stream_type: s.stream_type.clone(),
                from,
                to: state,
                orphaned_at,
            });
        }
        if is_due_for_removal(s, now, config) {
            m.cleaned_streams += 1;
            remove.push(s.stream_id.clone());
            continue;
        }
        states.insert(s.stream_id.clone(), state);
        match state {
            StreamState::Healthy => m.healthy_streams += 1,
            StreamState::Stale => m.stale_streams += 1,
            StreamState::Orphaned => {
                m.orphaned_streams += 1;
                *m.orphaned_by_type.entry(s.stream_type.clone()).or_insert(0) += 1;
            }
            StreamState::Closed => {}
        }
    }

    m.active_streams = m.healthy_streams + m.stale_streams + m.orphaned_streams;
    m.orphan_rate = if m.active_streams == 0 { 0.0 } else { m.orphaned_streams as f64 / m.active_streams as f64 };
    transitions.sort_by(|a, b| a.stream_id.cmp(&b.stream_id));
    remove.sort();

    GuardianTick { at: now, warnings: warnings_for(&m, config), metrics: m, transitions, remove, states }
}

/// Adds `n` streams that [`classify`] did not see because they are known to stay healthy (healthy at the
/// last tick, fresh heartbeat, open and not orphaned: no transition, no removal), then recomputes the
/// derived metrics and the warnings. `classify(all) == with_untouched_healthy(classify(all − those), n)`
/// in metrics, warnings, transitions and removals (`states` lists only the streams classified).
pub fn with_untouched_healthy(mut tick: GuardianTick, n: u64, config: &GuardianConfig) -> GuardianTick {
    let m = &mut tick.metrics;
    m.healthy_streams += n;
    m.active_streams = m.healthy_streams + m.stale_streams + m.orphaned_streams;
    m.orphan_rate = if m.active_streams == 0 { 0.0 } else { m.orphaned_streams as f64 / m.active_streams as f64 };
    tick.warnings = warnings_for(&tick.metrics, config);
    tick
}

/// The warnings `metrics` trigger under `config` (strictly-above rule, fixed order).
pub fn warnings_for(metrics: &TickMetrics, config: &GuardianConfig) -> Vec<Warning> {
    let mut out = Vec::new();
    if metrics.stale_streams > config.stale_warning {
        out.push(Warning {
            kind: WarningKind::TooManyStale,
            value: metrics.stale_streams as f64,
            threshold: config.stale_warning as f64,
            message: format!("stale_streams {} > {}", metrics.stale_streams, config.stale_warning),
        });
    }
    if metrics.orphaned_streams > config.orphaned_warning {
        out.push(Warning {
            kind: WarningKind::TooManyOrphaned,
            value: metrics.orphaned_streams as f64,
            threshold: config.orphaned_warning as f64,
            message: format!("orphaned_streams {} > {}", metrics.orphaned_streams, config.orphaned_warning),
        });
    }
    if metrics.orphan_rate > config.orphan_rate_warning {
        out.push(Warning {
            kind: WarningKind::OrphanRateHigh,
            value: metrics.orphan_rate,
            threshold: config.orphan_rate_warning,
            message: format!("orphan_rate {:.3} > {:.3}", metrics.orphan_rate, config.orphan_rate_warning),
        });
    }
    out
}

/// Applies a heartbeat at `now` (rules in the module docs). A removed stream never reaches here: the
/// caller answers NOT_FOUND for an unknown id.
pub fn heartbeat(
    stream: &mut TrackedStream,
    now: DateTime<Utc>,
    config: &GuardianConfig,
) -> Result<(), HeartbeatRefusal> {
    match state_of(stream, now, config) {
        StreamState::Closed => Err(HeartbeatRefusal::Closed),
        StreamState::Orphaned => Err(HeartbeatRefusal::Orphaned),
        StreamState::Healthy | StreamState::Stale => {
            stream.last_heartbeat = stream.last_heartbeat.max(now);
            Ok(())
        }
    }
}

/// Accepts builtin and configured extra types; the error lists every allowed type.
pub fn validate_stream_type(t: &str, config: &GuardianConfig) -> Result<(), String> {
    if config.is_allowed_type(t) {
        Ok(())
    } else {
        Err(format!("unknown stream type {t:?}; allowed: {}", config.allowed_types().join(", ")))
    }
}

/// Accepts 1–128 chars of `[A-Za-z0-9_.:-]`.
pub fn validate_stream_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("stream_id must not be empty".to_string());
    }
    if let Some((i, c)) =
        id.chars().enumerate().find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        return Err(format!("stream_id has invalid character {c:?} at position {i}; allowed: A-Z a-z 0-9 _ . : -"));
    }
    // Only ASCII is left here, so bytes == chars.
    if id.len() > MAX_STREAM_ID_LEN {
        return Err(format!("stream_id is {} chars; at most {MAX_STREAM_ID_LEN} allowed", id.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap()
    }

    fn at(secs: i64) -> DateTime<Utc> {
        t0() + TimeDelta::seconds(secs)
    }

    fn cfg() -> GuardianConfig {
        GuardianConfig::default()
    }

    fn open(id: &str, ty: &str, secs: i64) -> TrackedStream {
        TrackedStream::open(id, ty, "owner-1", at(secs))
    }

    fn no_prev() -> HashMap<String, StreamState> {
        HashMap::new()
    }

    /// (state kept for the only stream, whether it was removed this tick)
    fn one(tick: &GuardianTick) -> (Option<StreamState>, bool) {
        (tick.states.values().next().copied(), tick.metrics.cleaned_streams == 1)
    }

    // ---- timelines -------------------------------------------------------------------------

    #[test]
    fn timeline_open_healthy_stale_orphaned_cleaned() {
        let c = cfg();
        let s = vec![open("s1", "generation", 0)];
        let mut prev = no_prev();
        let mut seen = Vec::new();
        for secs in [0, 10, 30, 31, 60, 120, 121, 200, 420, 421] {
            let tick = classify(&s, &prev, at(secs), &c);
            seen.push((secs, tick.transitions.iter().map(|t| (t.from, t.to)).collect::<Vec<_>>(), one(&tick)));
            prev = tick.previous_states();
        }
        use StreamState::*;
        let expected = vec![
            (0, vec![], (Some(Healthy), false)),
            (10, vec![], (Some(Healthy), false)),
            (30, vec![], (Some(Healthy), false)), // exactly stale_after: still healthy
            (31, vec![(Healthy, Stale)], (Some(Stale), false)),
            (60, vec![], (Some(Stale), false)),
            (120, vec![], (Some(Stale), false)), // exactly orphan_after: still stale
            (121, vec![(Stale, Orphaned)], (Some(Orphaned), false)),
            (200, vec![], (Some(Orphaned), false)),
            (420, vec![], (Some(Orphaned), false)), // orphaned since 120, exactly retention: kept
            (421, vec![], (None, true)),            // removed: no state left
        ];
        assert_eq!(seen, expected);
    }

    #[test]
    fn newly_orphaned_transition_carries_orphaned_at_and_persisting_is_idempotent() {
        let c = cfg();
        let mut s = open("s1", "coach_start", 0);
        let prev: HashMap<_, _> = [("s1".to_string(), StreamState::Stale)].into();
        let tick = classify(std::slice::from_ref(&s), &prev, at(150), &c);
        assert_eq!(tick.transitions.len(), 1);
        assert_eq!(tick.transitions[0].to, StreamState::Orphaned);
        assert_eq!(tick.transitions[0].orphaned_at, Some(at(120)));
        let before: Vec<_> = (100..500).map(|x| is_due_for_removal(&s, at(x), &c)).collect();
        s.orphaned_at = tick.transitions[0].orphaned_at;
        let after: Vec<_> = (100..500).map(|x| is_due_for_removal(&s, at(x), &c)).collect();
        assert_eq!(before, after);
        // once persisted, a new transition (e.g. after restart) carries no orphaned_at
        let tick = classify(std::slice::from_ref(&s), &no_prev(), at(150), &c);
        assert_eq!(tick.transitions[0].orphaned_at, None);
    }

    #[test]
    fn heartbeat_moves_stale_back_to_healthy() {
        let c = cfg();
        let mut s = open("s1", "generation", 0);
        let t1 = classify(std::slice::from_ref(&s), &no_prev(), at(40), &c);
        assert_eq!(t1.states["s1"], StreamState::Stale);
        assert_eq!(heartbeat(&mut s, at(45), &c), Ok(()));
        assert_eq!(s.last_heartbeat, at(45));
        let t2 = classify(std::slice::from_ref(&s), &t1.previous_states(), at(50), &c);
        assert_eq!(t2.states["s1"], StreamState::Healthy);
        assert_eq!(t2.transitions.len(), 1);
        assert_eq!((t2.transitions[0].from, t2.transitions[0].to), (StreamState::Stale, StreamState::Healthy));
        assert_eq!(t2.transitions[0].orphaned_at, None);
        // the clock restarts from the new heartbeat
        assert_eq!(state_of(&s, at(75), &c), StreamState::Healthy);
        assert_eq!(state_of(&s, at(76), &c), StreamState::Stale);
        assert_eq!(state_of(&s, at(166), &c), StreamState::Orphaned);
    }

    #[test]
    fn owner_gone_orphans_immediately_and_is_cleaned_after_retention_from_mark() {
        let c = cfg();
        let mut s = open("s1", "profile_start", 0);
        heartbeat(&mut s, at(5), &c).unwrap();
        assert!(s.mark_owner_gone(at(10), &c));
        assert!(!s.mark_owner_gone(at(20), &c), "second mark changes nothing");
        assert_eq!(s.orphaned_at, Some(at(10)));
        assert_eq!(state_of(&s, at(10), &c), StreamState::Orphaned);
        let tick = classify(std::slice::from_ref(&s), &no_prev(), at(11), &c);
        assert_eq!(tick.metrics.orphaned_streams, 1);
        assert_eq!(tick.metrics.healthy_streams, 0);
        assert_eq!(tick.transitions[0].orphaned_at, None, "already stamped");
        assert!(!is_due_for_removal(&s, at(310), &c));
        assert!(is_due_for_removal(&s, at(311), &c));
    }

    #[test]
    fn mark_owner_gone_on_long_orphaned_stream_keeps_earlier_instant() {
        let c = cfg();
        let mut s = open("s1", "generation", 0);
        s.mark_owner_gone(at(1000), &c);
        assert_eq!(s.orphaned_at, Some(at(120)));
    }

    #[test]
    fn owner_gone_flag_without_stamp_falls_back_to_age_instant() {
        let c = cfg();
        let mut s = open("s1", "generation", 0);
        s.owner_gone = true;
        assert_eq!(state_of(&s, at(1), &c), StreamState::Orphaned);
        assert_eq!(orphaned_since(&s, &c), at(120));
        assert!(!is_due_for_removal(&s, at(420), &c));
        assert!(is_due_for_removal(&s, at(421), &c));
        let tick = classify(std::slice::from_ref(&s), &no_prev(), at(1), &c);
        assert_eq!(tick.transitions[0].orphaned_at, Some(at(120)));
    }

    #[test]
    fn mark_owner_gone_on_closed_stream_only_sets_flag() {
        let c = cfg();
        let mut s = open("s1", "generation", 0);
        s.close(at(5), None);
        assert!(s.mark_owner_gone(at(6), &c));
        assert_eq!(s.orphaned_at, None);
        assert_eq!(state_of(&s, at(6), &c), StreamState::Closed);
    }

    #[test]
    fn close_then_cleaned_after_retention() {
        let c = cfg();
        let mut s = open("s1", "watch_health", 0);
        assert!(s.close(at(10), Some("done".into())));
        assert!(!s.close(at(20), Some("again".into())));
        assert_eq!((s.closed_at, s.close_reason.as_deref()), (Some(at(10)), Some("done")));
        let tick = classify(std::slice::from_ref(&s), &no_prev(), at(310), &c);
        assert_eq!(tick.states["s1"], StreamState::Closed);
        assert_eq!(tick.metrics.active_streams, 0);
        assert!(tick.remove.is_empty());
        let tick = classify(std::slice::from_ref(&s), &tick.previous_states(), at(311), &c);
        assert_eq!(tick.remove, vec!["s1".to_string()]);
        assert_eq!(tick.metrics.cleaned_streams, 1);
        assert!(tick.states.is_empty());
        assert!(tick.transitions.is_empty(), "still Closed, only removed");
    }

    #[test]
    fn closing_an_orphaned_stream_restarts_retention_from_close() {
        let c = cfg();
        let mut s = open("s1", "generation", 0);
        s.close(at(400), None);
        assert!(!is_due_for_removal(&s, at(500), &c));
        assert!(is_due_for_removal(&s, at(701), &c));
    }

    #[test]
    fn closed_beats_owner_gone_and_age() {
        let c = cfg();
        let mut s = open("s1", "generation", 0);
        s.owner_gone = true;
        s.orphaned_at = Some(at(1));
        s.closed_at = Some(at(2));
        assert_eq!(state_of(&s, at(10_000), &c), StreamState::Closed);
    }

    #[test]
    fn future_heartbeat_from_skew_is_healthy() {
        let c = cfg();
        let s = open("s1", "generation", 100);
        assert_eq!(state_of(&s, at(0), &c), StreamState::Healthy);
    }

    // ---- heartbeats ------------------------------------------------------------------------

    #[test]
    fn heartbeat_refusals() {
        let c = cfg();
        let mut closed = open("a", "generation", 0);
        closed.close(at(1), None);
        assert_eq!(heartbeat(&mut closed, at(2), &c), Err(HeartbeatRefusal::Closed));
        assert_eq!(closed.last_heartbeat, at(0));

        let mut aged = open("b", "generation", 0);
        assert_eq!(heartbeat(&mut aged, at(121), &c), Err(HeartbeatRefusal::Orphaned), "orphaned without a tick");
        assert_eq!(aged.last_heartbeat, at(0));

        let mut gone = open("c", "generation", 0);
        gone.mark_owner_gone(at(1), &c);
        assert_eq!(heartbeat(&mut gone, at(2), &c), Err(HeartbeatRefusal::Orphaned));

        let mut stamped = open("d", "generation", 0);
        stamped.orphaned_at = Some(at(0));
        assert_eq!(heartbeat(&mut stamped, at(1), &c), Err(HeartbeatRefusal::Orphaned));

        assert_eq!(HeartbeatRefusal::Orphaned.to_string(), "stream is orphaned; open a new stream");
        assert_eq!(HeartbeatRefusal::Closed.to_string(), "stream is closed");
    }

    #[test]
    fn heartbeat_accepted_up_to_orphan_boundary_and_never_moves_back() {
        let c = cfg();
        let mut s = open("s1", "generation", 0);
        assert_eq!(heartbeat(&mut s, at(120), &c), Ok(()));
        assert_eq!(s.last_heartbeat, at(120));
        assert_eq!(heartbeat(&mut s, at(100), &c), Ok(()));
        assert_eq!(s.last_heartbeat, at(120), "reordered heartbeat does not rewind");
    }

    // ---- metrics -----------------------------------------------------------------------------

    #[test]
    fn every_metric_on_a_mixed_set() {
        let c = cfg();
        let now = at(1000);
        let mut v = vec![
            open("h1", "generation", 990),
            open("h2", "coach_start", 970), // exactly 30 s
            open("s1", "generation", 960),
            open("o1", "generation", 870),       // orphaned since 990
            open("o2", "profile_continue", 800), // orphaned since 920
            open("gone", "watch_executions", 1000),
            open("oc", "generation", 0), // orphaned since 120: cleaned
            open("c1", "generation", 0), // closed recently: kept, not active
            open("c2", "generation", 0), // closed long ago: cleaned
        ];
        v[5].mark_owner_gone(at(995), &c);
        v[7].close(at(900), None);
        v[8].close(at(600), None);
        let tick = classify(&v, &no_prev(), now, &c);
        let m = &tick.metrics;
        assert_eq!(m.healthy_streams, 2);
        assert_eq!(m.stale_streams, 1);
        assert_eq!(m.orphaned_streams, 3);
        assert_eq!(m.active_streams, 6);
        assert_eq!(m.cleaned_streams, 2);
        assert_eq!(m.orphan_rate, 0.5);
        assert_eq!(tick.remove, vec!["c2".to_string(), "oc".to_string()]);
        assert_eq!(tick.states.len(), 7);
        assert_eq!(tick.states["c1"], StreamState::Closed);
        assert_eq!(m.orphaned_by_type["generation"], 1);
        assert_eq!(m.orphaned_by_type["profile_continue"], 1);
        assert_eq!(m.orphaned_by_type["watch_executions"], 1);
        assert_eq!(m.orphaned_by_type["coach_start"], 0);
        assert_eq!(m.orphaned_by_type.values().sum::<u64>(), m.orphaned_streams);
        assert_eq!(tick.at, now);
        let kinds: Vec<_> = tick.warnings.iter().map(|w| w.kind).collect();
        assert_eq!(kinds, vec![WarningKind::OrphanRateHigh]);
        assert_eq!(tick.warnings[0].message, "orphan_rate 0.500 > 0.100");
        // transitions (previous empty => from Healthy), sorted by id; healthy ones absent
        let ids: Vec<_> = tick.transitions.iter().map(|t| t.stream_id.as_str()).collect();
        assert_eq!(ids, vec!["c1", "c2", "gone", "o1", "o2", "oc", "s1"]);
    }

    #[test]
    fn orphaned_by_type_seeds_allowed_types_and_counts_unknown_ones() {
        let c = GuardianConfig { extra_stream_types: vec!["batch_export".into()], ..cfg() };
        let v = vec![open("x", "legacy_type", 0), open("y", "legacy_type", 0), open("z", "generation", 0)];
        let tick = classify(&v, &no_prev(), at(200), &c);
        let m = &tick.metrics.orphaned_by_type;
        assert_eq!(m.len(), 9);
        assert_eq!(m["legacy_type"], 2);
        assert_eq!(m["generation"], 1);
        assert_eq!(m["batch_export"], 0);
        for t in BUILTIN_STREAM_TYPES {
            assert!(m.contains_key(t));
        }
        // removed orphans are not counted
        let tick = classify(&v, &no_prev(), at(1000), &c);
        assert!(tick.metrics.orphaned_by_type.values().all(|&n| n == 0));
        assert!(!tick.metrics.orphaned_by_type.contains_key("legacy_type"));
    }

    #[test]
    fn orphan_rate_edge_cases() {
        let c = cfg();
        // no streams at all
        let tick = classify(&[], &no_prev(), at(0), &c);
        assert_eq!(
            tick.metrics,
            TickMetrics { orphaned_by_type: tick.metrics.orphaned_by_type.clone(), ..Default::default() }
        );
        assert_eq!(tick.metrics.orphan_rate, 0.0);
        assert!(tick.warnings.is_empty());
        // only closed streams: active 0 -> 0
        let mut s = open("c", "generation", 0);
        s.close(at(1), None);
        let tick = classify(&[s], &no_prev(), at(2), &c);
        assert_eq!((tick.metrics.active_streams, tick.metrics.orphan_rate), (0, 0.0));
        // all orphaned -> exactly 1.0
        let v: Vec<_> = (0..3).map(|i| open(&format!("o{i}"), "generation", 0)).collect();
        let tick = classify(&v, &no_prev(), at(200), &c);
        assert_eq!(tick.metrics.orphan_rate, 1.0);
        // exactly 0.1 (1 of 10, 3 of 30) -> no warning
        for n in [10, 30] {
            let mut v: Vec<_> = (0..n).map(|i| open(&format!("h{i}"), "generation", 195)).collect();
            for s in v.iter_mut().take(n / 10) {
                s.last_heartbeat = at(0);
            }
            let tick = classify(&v, &no_prev(), at(200), &c);
            assert_eq!(tick.metrics.orphan_rate, 0.1);
            assert!(tick.warnings.is_empty(), "{:?}", tick.warnings);
        }
        // 2 of 10 -> warning
        let mut v: Vec<_> = (0..10).map(|i| open(&format!("h{i}"), "generation", 195)).collect();
        v[0].last_heartbeat = at(0);
        v[1].last_heartbeat = at(0);
        let tick = classify(&v, &no_prev(), at(200), &c);
        assert_eq!(tick.warnings.len(), 1);
        assert_eq!(tick.warnings[0].kind, WarningKind::OrphanRateHigh);
        assert_eq!((tick.warnings[0].value, tick.warnings[0].threshold), (0.2, 0.1));
    }

    fn streams_with(stale: usize, orphaned: usize, healthy: usize) -> Vec<TrackedStream> {
        let mut v = Vec::new();
        for i in 0..stale {
            v.push(open(&format!("s{i}"), "generation", 160)); // 40 s old at 200
        }
        for i in 0..orphaned {
            v.push(open(&format!("o{i}"), "generation", 0)); // 200 s old
        }
        for i in 0..healthy {
            v.push(open(&format!("h{i}"), "generation", 195));
        }
        v
    }

    #[test]
    fn stale_warning_boundary() {
        let c = cfg();
        let tick = classify(&streams_with(10, 0, 0), &no_prev(), at(200), &c);
        assert_eq!(tick.metrics.stale_streams, 10);
        assert!(tick.warnings.is_empty());
        let tick = classify(&streams_with(11, 0, 0), &no_prev(), at(200), &c);
        assert_eq!(tick.warnings.len(), 1);
        let w = &tick.warnings[0];
        assert_eq!((w.kind, w.value, w.threshold), (WarningKind::TooManyStale, 11.0, 10.0));
        assert_eq!(w.message, "stale_streams 11 > 10");
        assert_eq!(w.kind.as_str(), "TOO_MANY_STALE");
    }

    #[test]
    fn orphaned_warning_boundary() {
        let c = cfg();
        // 5 orphaned of 100 active: rate 0.05, count at threshold -> nothing
        let tick = classify(&streams_with(0, 5, 95), &no_prev(), at(200), &c);
        assert!(tick.warnings.is_empty(), "{:?}", tick.warnings);
        let tick = classify(&streams_with(0, 6, 94), &no_prev(), at(200), &c);
        assert_eq!(tick.warnings.len(), 1);
        let w = &tick.warnings[0];
        assert_eq!((w.kind, w.value, w.threshold), (WarningKind::TooManyOrphaned, 6.0, 5.0));
        assert_eq!(w.message, "orphaned_streams 6 > 5");
        assert_eq!(WarningKind::TooManyOrphaned.as_str(), "TOO_MANY_ORPHANED");
        assert_eq!(WarningKind::OrphanRateHigh.as_str(), "ORPHAN_RATE_HIGH");
    }

    #[test]
    fn all_warnings_in_fixed_order_and_custom_thresholds() {
        let tick = classify(&streams_with(11, 6, 0), &no_prev(), at(200), &cfg());
        let kinds: Vec<_> = tick.warnings.iter().map(|w| w.kind).collect();
        assert_eq!(kinds, vec![WarningKind::TooManyStale, WarningKind::TooManyOrphaned, WarningKind::OrphanRateHigh]);
        let loose = GuardianConfig { stale_warning: 11, orphaned_warning: 6, orphan_rate_warning: 1.0, ..cfg() };
        assert!(classify(&streams_with(11, 6, 0), &no_prev(), at(200), &loose).warnings.is_empty());
        let strict = GuardianConfig { stale_warning: 0, orphaned_warning: 0, orphan_rate_warning: 0.0, ..cfg() };
        assert_eq!(classify(&streams_with(1, 1, 0), &no_prev(), at(200), &strict).warnings.len(), 3);
    }

    #[test]
    fn custom_durations_are_honoured() {
        let c = GuardianConfig {
            stale_after: TimeDelta::seconds(5),
            orphan_after: TimeDelta::seconds(10),
            retention: TimeDelta::seconds(1),
            ..cfg()
        };
        let s = open("s", "generation", 0);
        assert_eq!(state_of(&s, at(6), &c), StreamState::Stale);
        assert_eq!(state_of(&s, at(11), &c), StreamState::Orphaned);
        assert!(!is_due_for_removal(&s, at(11), &c));
        assert!(is_due_for_removal(&s, at(12), &c));
    }

    // ---- transitions -------------------------------------------------------------------------

    #[test]
    fn transitions_reported_only_on_change() {
        let c = cfg();
        let v = streams_with(2, 2, 2);
        let first = classify(&v, &no_prev(), at(200), &c);
        assert_eq!(first.transitions.len(), 4, "healthy ones start healthy");
        let second = classify(&v, &first.previous_states(), at(201), &c);
        assert!(second.transitions.is_empty());
        assert_eq!(second.metrics, first.metrics);
    }

    #[test]
    fn new_stream_absent_from_previous_counts_as_healthy() {
        let c = cfg();
        let prev: HashMap<_, _> = [("ghost".to_string(), StreamState::Stale)].into();
        let tick = classify(&[open("new", "generation", 0)], &prev, at(1), &c);
        assert!(tick.transitions.is_empty());
        assert!(!tick.states.contains_key("ghost"));
        let tick = classify(&[open("late", "generation", 0)], &prev, at(40), &c);
        assert_eq!((tick.transitions[0].from, tick.transitions[0].to), (StreamState::Healthy, StreamState::Stale));
    }

    #[test]
    fn output_is_independent_of_input_order() {
        let c = cfg();
        let mut v = streams_with(3, 3, 3);
        let mut closed = open("zz", "generation", 0);
        closed.close(at(1), None);
        v.push(closed);
        let a = classify(&v, &no_prev(), at(400), &c);
        v.reverse();
        let b = classify(&v, &no_prev(), at(400), &c);
        assert_eq!(a, b);
    }

    // ---- validation --------------------------------------------------------------------------

    #[test]
    fn config_validation() {
        assert_eq!(cfg().validate(), Ok(()));
        let d = cfg();
        assert_eq!(d.tick_interval, Duration::from_secs(10));
        assert_eq!(d.stale_after, TimeDelta::seconds(30));
        assert_eq!(d.orphan_after, TimeDelta::seconds(120));
        assert_eq!(d.retention, TimeDelta::seconds(300));
        assert_eq!((d.stale_warning, d.orphaned_warning, d.orphan_rate_warning), (10, 5, 0.1));

        let bad = |c: GuardianConfig, needle: &str| {
            let e = c.validate().unwrap_err();
            assert!(e.contains(needle), "{e:?} lacks {needle:?}");
        };
        bad(GuardianConfig { tick_interval: Duration::ZERO, ..cfg() }, "tick_interval");
        bad(GuardianConfig { stale_after: TimeDelta::zero(), ..cfg() }, "stale_after must be > 0");
        bad(GuardianConfig { flush_interval: Duration::ZERO, ..cfg() }, "flush_interval");
        bad(GuardianConfig { flush_interval: Duration::from_secs(16), ..cfg() }, "flush_interval");
        assert!(GuardianConfig { flush_interval: Duration::from_secs(15), ..cfg() }.validate().is_ok());
        bad(GuardianConfig { orphan_after: TimeDelta::seconds(30), ..cfg() }, "orphan_after");
        bad(GuardianConfig { orphan_after: TimeDelta::seconds(10), ..cfg() }, "orphan_after");
        bad(GuardianConfig { retention: TimeDelta::zero(), ..cfg() }, "retention");
        bad(GuardianConfig { retention: TimeDelta::seconds(-1), ..cfg() }, "retention");
        bad(GuardianConfig { orphan_rate_warning: 1.01, ..cfg() }, "orphan_rate_warning");
        bad(GuardianConfig { orphan_rate_warning: -0.1, ..cfg() }, "orphan_rate_warning");
        bad(GuardianConfig { orphan_rate_warning: f64::NAN, ..cfg() }, "orphan_rate_warning");
        bad(GuardianConfig { extra_stream_types: vec!["Bad".into()], ..cfg() }, "invalid extra stream type");
        bad(GuardianConfig { extra_stream_types: vec!["".into()], ..cfg() }, "invalid extra stream type");
        bad(GuardianConfig { extra_stream_types: vec!["9x".into()], ..cfg() }, "invalid extra stream type");
        bad(GuardianConfig { extra_stream_types: vec!["a".repeat(65)], ..cfg() }, "invalid extra stream type");
        bad(GuardianConfig { extra_stream_types: vec!["generation".into()], ..cfg() }, "already built in");
        bad(GuardianConfig { extra_stream_types: vec!["x_1".into(), "x_1".into()], ..cfg() }, "listed twice");
        for ok in [0.0, 1.0] {
            assert_eq!(GuardianConfig { orphan_rate_warning: ok, ..cfg() }.validate(), Ok(()));
        }
        let ok = GuardianConfig { extra_stream_types: vec!["x".into(), "a".repeat(64)], ..cfg() };
        assert_eq!(ok.validate(), Ok(()));
        // all problems reported at once
        let e =
            GuardianConfig { retention: TimeDelta::zero(), orphan_rate_warning: 2.0, ..cfg() }.validate().unwrap_err();
        assert!(e.contains("retention") && e.contains("orphan_rate_warning") && e.contains("; "));
    }

    #[test]
    fn stream_type_validation() {
        let c = cfg();
        for t in BUILTIN_STREAM_TYPES {
            assert_eq!(validate_stream_type(t, &c), Ok(()));
        }
        let e = validate_stream_type("telepathy", &c).unwrap_err();
        assert!(e.starts_with("unknown stream type \"telepathy\"; allowed: generation, coach_start"), "{e}");
        assert!(e.ends_with("watch_health, watch_executions"), "{e}");
        assert!(validate_stream_type("Generation", &c).is_err());
        assert!(validate_stream_type("", &c).is_err());

        let c = GuardianConfig { extra_stream_types: vec!["batch_export".into()], ..cfg() };
        assert_eq!(validate_stream_type("batch_export", &c), Ok(()));
        assert!(c.is_allowed_type("batch_export") && c.is_allowed_type("generation"));
        assert!(!c.is_allowed_type("telepathy"));
        assert!(validate_stream_type("telepathy", &c).unwrap_err().ends_with("watch_executions, batch_export"));
        assert_eq!(c.allowed_types().len(), 8);
        let dup = GuardianConfig { extra_stream_types: vec!["generation".into(), "b".into(), "b".into()], ..cfg() };
        assert_eq!(dup.allowed_types().len(), 8);
    }

    #[test]
    fn stream_id_validation() {
        assert_eq!(validate_stream_id("a"), Ok(()));
        assert_eq!(validate_stream_id("Run-42_gen.v1:part-3"), Ok(()));
        assert_eq!(validate_stream_id(&"x".repeat(128)), Ok(()));
        assert!(validate_stream_id(&"x".repeat(129)).unwrap_err().contains("129"));
        assert!(validate_stream_id("").unwrap_err().contains("empty"));
        for bad in ["a b", "a/b", "a\nb", "é", "ab€", "a\0"] {
            let e = validate_stream_id(bad).unwrap_err();
            assert!(e.contains("invalid character"), "{bad:?}: {e}");
        }
        assert!(validate_stream_id("ab€").unwrap_err().contains("position 2"));
    }

    #[test]
    fn state_names_round_trip() {
        use StreamState::*;
        for s in [Healthy, Stale, Orphaned, Closed] {
            assert_eq!(StreamState::parse(s.as_str()), Some(s));
            assert_eq!(s.to_string(), s.as_str());
        }
        assert_eq!(Orphaned.as_str(), "ORPHANED");
        assert_eq!(StreamState::parse("healthy"), None);
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let c = GuardianConfig { orphan_after: TimeDelta::MAX, retention: TimeDelta::MAX, ..cfg() };
        let mut s = TrackedStream::open("s", "generation", "o", DateTime::<Utc>::MAX_UTC);
        assert_eq!(orphaned_since(&s, &c), DateTime::<Utc>::MAX_UTC);
        assert_eq!(state_of(&s, DateTime::<Utc>::MIN_UTC, &c), StreamState::Healthy);
        s.owner_gone = true;
        let _ = classify(&[s.clone()], &no_prev(), DateTime::<Utc>::MIN_UTC, &c);
        let _ = classify(&[s], &no_prev(), DateTime::<Utc>::MAX_UTC, &c);
    }

    // ---- properties --------------------------------------------------------------------------

    const TYPES: [&str; 4] = ["generation", "coach_start", "watch_health", "legacy_type"];

    prop_compose! {
        fn arb_stream(idx: usize)(
            ty in 0..TYPES.len(),
            opened in 0i64..2_000,
            hb_after_open in 0i64..500,
            closed in proptest::option::of(0i64..1_000),
            owner_gone in any::<bool>(),
            orphaned_at in proptest::option::of(0i64..2_500),
        ) -> TrackedStream {
            let mut s = TrackedStream::open(format!("s{idx}"), TYPES[ty], "owner", at(opened));
            s.last_heartbeat = at(opened + hb_after_open);
            s.closed_at = closed.map(|d| at(opened + d));
            s.owner_gone = owner_gone;
            s.orphaned_at = orphaned_at.map(at);
            s
        }
    }

    fn arb_streams() -> impl Strategy<Value = Vec<TrackedStream>> {
        (0usize..40).prop_flat_map(|n| (0..n).map(arb_stream).collect::<Vec<_>>())
    }

    fn arb_config() -> impl Strategy<Value = GuardianConfig> {
        (1i64..100, 1i64..300, 1i64..600, 0u64..20, 0u64..20, 0.0f64..=1.0).prop_map(|(st, extra, ret, sw, ow, r)| {
            GuardianConfig {
                stale_after: TimeDelta::seconds(st),
                // At most half of stale_after, as validate() requires.
                flush_interval: Duration::from_millis(500),
                orphan_after: TimeDelta::seconds(st + extra),
                retention: TimeDelta::seconds(ret),
                stale_warning: sw,
                orphaned_warning: ow,
                orphan_rate_warning: r,
                ..GuardianConfig::default()
            }
        })
    }

    fn arb_state() -> impl Strategy<Value = StreamState> {
        prop_oneof![
            Just(StreamState::Healthy),
            Just(StreamState::Stale),
            Just(StreamState::Orphaned),
            Just(StreamState::Closed)
        ]
    }

    fn rank(s: StreamState) -> u8 {
        match s {
            StreamState::Healthy => 0,
            StreamState::Stale => 1,
            StreamState::Orphaned => 2,
            StreamState::Closed => 3,
        }
    }

    proptest! {
        #[test]
        fn prop_metrics_consistent(streams in arb_streams(), c in arb_config(), now in -100i64..4_000) {
            prop_assert_eq!(c.validate(), Ok(()));
            let tick = classify(&streams, &no_prev(), at(now), &c);
            let m = &tick.metrics;
            prop_assert_eq!(m.healthy_streams + m.stale_streams + m.orphaned_streams, m.active_streams);
            let closed_kept = tick.states.values().filter(|s| **s == StreamState::Closed).count() as u64;
            prop_assert_eq!(m.cleaned_streams + m.active_streams + closed_kept, streams.len() as u64);
            prop_assert_eq!(m.cleaned_streams, tick.remove.len() as u64);
            prop_assert_eq!(tick.states.len() + tick.remove.len(), streams.len());
            prop_assert!((0.0..=1.0).contains(&m.orphan_rate));
            if m.active_streams == 0 { prop_assert_eq!(m.orphan_rate, 0.0); }
            prop_assert_eq!(m.orphaned_by_type.values().sum::<u64>(), m.orphaned_streams);
            // every removed stream is closed or orphaned
            for s in streams.iter().filter(|s| tick.remove.contains(&s.stream_id)) {
                let st = state_of(s, at(now), &c);
                prop_assert!(st == StreamState::Closed || st == StreamState::Orphaned);
            }
            // warnings agree with thresholds
            let has = |k| tick.warnings.iter().any(|w| w.kind == k);
            prop_assert_eq!(has(WarningKind::TooManyStale), m.stale_streams > c.stale_warning);
            prop_assert_eq!(has(WarningKind::TooManyOrphaned), m.orphaned_streams > c.orphaned_warning);
            prop_assert_eq!(has(WarningKind::OrphanRateHigh), m.orphan_rate > c.orphan_rate_warning);
        }

        #[test]
        fn prop_skipping_untouched_healthy_streams_changes_nothing(
            streams in arb_streams(), c in arb_config(), now in 0i64..4_000,
            prev_states in proptest::collection::vec(arb_state(), 40),
        ) {
            let prev: HashMap<_, _> =
                streams.iter().zip(&prev_states).map(|(s, p)| (s.stream_id.clone(), *p)).collect();
            let fresh_since = at(now) - c.stale_after;
            // What the store skips: healthy at the last tick, fresh, open, not orphaned.
            let untouched = |s: &TrackedStream| {
                prev.get(&s.stream_id).is_none_or(|p| *p == StreamState::Healthy)
                    && s.last_heartbeat >= fresh_since
                    && s.closed_at.is_none()
                    && s.orphaned_at.is_none()
                    && !s.owner_gone
            };
            let rest: Vec<TrackedStream> = streams.iter().filter(|s| !untouched(s)).cloned().collect();
            let skipped = (streams.len() - rest.len()) as u64;
            let full = classify(&streams, &prev, at(now), &c);
            let partial = with_untouched_healthy(classify(&rest, &prev, at(now), &c), skipped, &c);
            prop_assert_eq!(&full.metrics, &partial.metrics);
            prop_assert_eq!(&full.warnings, &partial.warnings);
            prop_assert_eq!(&full.transitions, &partial.transitions);
            prop_assert_eq!(&full.remove, &partial.remove);
        }

        #[test]
        fn prop_classify_deterministic_and_order_free(
            streams in arb_streams(), c in arb_config(), now in 0i64..4_000,
            prev_states in proptest::collection::vec(arb_state(), 40),
        ) {
            let prev: HashMap<_, _> =
                streams.iter().zip(&prev_states).map(|(s, p)| (s.stream_id.clone(), *p)).collect();
            let a = classify(&streams, &prev, at(now), &c);
            let b = classify(&streams, &prev, at(now), &c);
            prop_assert_eq!(&a, &b);
            let mut rev = streams.clone();
            rev.reverse();
            prop_assert_eq!(&a, &classify(&rev, &prev, at(now), &c));
            // transitions are exactly the changed streams
            for s in &streams {
                let from = prev.get(&s.stream_id).copied().unwrap_or(StreamState::Healthy);
                let to = state_of(s, at(now), &c);
                let t = a.transitions.iter().find(|t| t.stream_id == s.stream_id);
                prop_assert_eq!(t.is_some(), from != to);
                if let Some(t) = t {
                    prop_assert_eq!((t.from, t.to), (from, to));
                    prop_assert_eq!(t.orphaned_at.is_some(), to == StreamState::Orphaned && s.orphaned_at.is_none());
                }
            }
            // once the caller deletes `remove`, re-classifying against this tick's states reports no transitions
            let kept: Vec<_> = streams.iter().filter(|s| !a.remove.contains(&s.stream_id)).cloned().collect();
            prop_assert!(classify(&kept, &a.previous_states(), at(now), &c).transitions.is_empty());
        }

        #[test]
        fn prop_monotonic_without_heartbeat(s in arb_stream(0), c in arb_config(), t1 in 0i64..4_000, dt in 0i64..4_000) {
            let (a, b) = (state_of(&s, at(t1), &c), state_of(&s, at(t1 + dt), &c));
            prop_assert!(rank(a) <= rank(b), "{:?} at {} then {:?} at {}", a, t1, b, t1 + dt);
            if a == StreamState::Orphaned { prop_assert_eq!(b, StreamState::Orphaned); }
            if a == StreamState::Closed { prop_assert_eq!(b, StreamState::Closed); }
            // once due for removal, always due
            if is_due_for_removal(&s, at(t1), &c) { prop_assert!(is_due_for_removal(&s, at(t1 + dt), &c)); }
        }

        #[test]
        fn prop_heartbeat_accepts_exactly_open_non_orphaned(s in arb_stream(0), c in arb_config(), now in 0i64..4_000) {
            let mut m = s.clone();
            let before = state_of(&s, at(now), &c);
            let r = heartbeat(&mut m, at(now), &c);
            match before {
                StreamState::Closed => { prop_assert_eq!(r, Err(HeartbeatRefusal::Closed)); prop_assert_eq!(&m, &s); }
                StreamState::Orphaned => { prop_assert_eq!(r, Err(HeartbeatRefusal::Orphaned)); prop_assert_eq!(&m, &s); }
                _ => {
                    prop_assert_eq!(r, Ok(()));
                    prop_assert!(m.last_heartbeat >= s.last_heartbeat && m.last_heartbeat >= at(now));
                    prop_assert_eq!(state_of(&m, at(now), &c), StreamState::Healthy);
                }
            }
        }

        #[test]
        fn prop_stream_id_validation_matches_spec(id in "[A-Za-z0-9_.:-]{1,128}", bad in "[^A-Za-z0-9_.:-]") {
            prop_assert_eq!(validate_stream_id(&id), Ok(()));
            let with_bad = format!("{id}{bad}");
            prop_assert!(validate_stream_id(&with_bad).is_err());
        }
    }
}
