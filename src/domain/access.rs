//! Who may call what: token scopes, the token format, the policy of every RPC, and the token
//! bucket that limits each token's request rate. Pure: randomness and time come in as arguments.
//!
//! A token reads `rwt_<id>_<secret>`: `id` is 16 hex digits, public, and names the row; `secret`
//! is 32 random bytes in unpadded base64url. Only SHA-256(secret) is stored, and it is compared in
//! constant time.

use std::{fmt, str::FromStr, time::Duration};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do. `Admin` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Submit reports and track streams (a worker's token).
    ReportWrite,
    /// Query and watch (the dashboard's and Prometheus' token).
    Read,
    /// Everything, including worker settings and token management.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::ReportWrite, Scope::Read, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ReportWrite => "report:write",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    /// Whether a token of this scope may make a call that needs `needed`.
    pub fn allows(self, needed: Scope) -> bool {
        self == Scope::Admin || self == needed
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| format!("unknown scope {s:?}: expected report:write, read or admin"))
    }
}

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Health checks, reflection, the dashboard's static files: no token.
    Open,
    Needs(Scope),
}

/// Services every caller may use without a token (probes and grpcurl's discovery).
const OPEN_SERVICES: [&str; 3] =
    ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

/// The scope each runwarden RPC needs, by service and method. A method missing here needs `admin`
/// (fail closed); a test checks every RPC of the served descriptors is listed.
pub const POLICY: &[(&str, &str, Scope)] = &[
    ("runwarden.v1.ReportService", "SubmitReport", Scope::ReportWrite),
    ("runwarden.v1.ReportService", "SubmitReports", Scope::ReportWrite),
    ("runwarden.v1.ReportService", "SubmitReportBatch", Scope::ReportWrite),
    ("runwarden.v1.GuardianService", "OpenStream", Scope::ReportWrite),
    ("runwarden.v1.GuardianService", "Heartbeat", Scope::ReportWrite),
    ("runwarden.v1.GuardianService", "HeartbeatBatch", Scope::ReportWrite),
    ("runwarden.v1.GuardianService", "CloseStream", Scope::ReportWrite),
    ("runwarden.v1.GuardianService", "ListStreams", Scope::Read),
    ("runwarden.v1.GuardianService", "GetGuardianStatus", Scope::Read),
    ("runwarden.v1.GuardianService", "WatchHealth", Scope::Read),
    ("runwarden.v1.QueryService", "ListWorkers", Scope::Read),
    ("runwarden.v1.QueryService", "GetWorker", Scope::Read),
    ("runwarden.v1.QueryService", "ListExecutions", Scope::Read),
    ("runwarden.v1.QueryService", "GetExecution", Scope::Read),
    ("runwarden.v1.QueryService", "GetWorkerStats", Scope::Read),
    ("runwarden.v1.QueryService", "GetDataQualitySummary", Scope::Read),
    ("runwarden.v1.QueryService", "WatchExecutions", Scope::Read),
    ("runwarden.v1.QueryService", "ListAnomalies", Scope::Read),
    ("runwarden.v1.QueryService", "GetWorkerLearning", Scope::Read),
    ("runwarden.v1.QueryService", "GetSystemLearning", Scope::Read),
    ("runwarden.v1.QueryService", "ListAlertDeliveries", Scope::Read),
    ("runwarden.v1.WorkerService", "UpsertWorker", Scope::Admin),
    ("runwarden.v1.WorkerService", "DeleteWorker", Scope::Admin),
    ("runwarden.v1.AdminService", "CreateToken", Scope::Admin),
    ("runwarden.v1.AdminService", "ListTokens", Scope::Admin),
    ("runwarden.v1.AdminService", "RevokeToken", Scope::Admin),
    ("runwarden.v1.AdminService", "ListAlertRules", Scope::Admin),
    ("runwarden.v1.AdminService", "CreateAlertRule", Scope::Admin),
    ("runwarden.v1.AdminService", "DeleteAlertRule", Scope::Admin),
];

/// What the gRPC call at `path` (`/package.Service/Method`) needs.
pub fn grpc_access(path: &str) -> Access {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (service, method) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    if OPEN_SERVICES.contains(&service) {
        return Access::Open;
    }
    POLICY
        .iter()
        .find(|(s, m, _)| *s == service && *m == method)
        .map_or(Access::Needs(Scope::Admin), |(_, _, scope)| Access::Needs(*scope))
}

/// What the REST route implementing the RPC `method` needs (method names are unique across
/// services; a test checks it).
pub fn operation_access(method: &str) -> Access {
    POLICY.iter().find(|(_, m, _)| *m == method).map_or(Access::Needs(Scope::Admin), |(_, _, s)| Access::Needs(*s))
}

const PREFIX: &str = "rwt_";
const ID_HEX: usize = 16;
const SECRET_BYTES: usize = 32;

/// A token split into its public id and its secret.
#[derive(Debug, PartialEq, Eq)]
pub struct Presented<'a> {
    pub id: &'a str,
    pub secret: &'a str,
}

/// A newly made token: the string shown once, its id, and the hash to store.
pub struct NewToken {
    pub id: String,
    pub token: String,
    pub secret_sha256: String,
}

/// Makes a token from 8 random bytes (id) and 32 random bytes (secret).
pub fn new_token(id_bytes: [u8; ID_HEX / 2], secret: [u8; SECRET_BYTES]) -> NewToken {
    let id: String = id_bytes.iter().map(|b| format!("{b:02x}")).collect();
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    NewToken { token: format!("{PREFIX}{id}_{secret}"), secret_sha256: sha256_hex(&secret), id }
}

/// Splits a presented token; `None` when it is not shaped like one of ours.
pub fn parse_token(token: &str) -> Option<Presented<'_>> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == ID_HEX && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let secret_ok = secret.len() == 43 && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some(Presented { id, secret })
}

/// The bearer token of an `authorization` header value (scheme case-insensitive).
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub fn sha256_hex(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `secret` hashes to `stored` (hex), in time independent of where they differ.
pub fn secret_matches(secret: &str, stored: &str) -> bool {
    let computed = sha256_hex(secret);
    computed.len() == stored.len() && bool::from(computed.as_bytes().ct_eq(stored.as_bytes()))
}

/// A lifetime such as `90d`, `12h`, `30m` or `3600s` (at most ten years).
pub fn parse_lifetime(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a lifetime like 90d, 12h, 30m or 3600s"))?;
    let unit_secs = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" | "" => 1,
        other => return Err(format!("unknown unit {other:?} in {text:?}: use d, h, m or s")),
    };
    let secs = n.checked_mul(unit_secs).filter(|s| (1..=10 * 366 * 86_400).contains(s));
    secs.map(Duration::from_secs).ok_or_else(|| format!("{text:?} must be between 1 second and ten years"))
}

/// A token bucket: `rate` requests per second on average, bursts up to `burst`.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    /// Seconds (on the caller's monotonic clock) of the last refill.
    at: f64,
}

/// The result of asking a bucket for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    Admitted,
    /// Over the limit; the next request is admitted after this long.
    RetryAfter(Duration),
}

impl Bucket {
    pub fn full(burst: f64, now: f64) -> Bucket {
        Bucket { tokens: burst, at: now }
    }

    /// Takes one request's worth at `now` (seconds, monotonic).
    pub fn admit(&mut self, rate: f64, burst: f64, now: f64) -> Admission {
        let elapsed = (now - self.at).max(0.0);
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now.max(self.at);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Admission::Admitted
        } else {
            let wait = if rate > 0.0 { (1.0 - self.tokens) / rate } else { 60.0 };
            Admission::RetryAfter(Duration::from_secs_f64(wait.clamp(0.001, 3600.0)))
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn tokens_round_trip_and_only_the_hash_matches() {
        let made = new_token([0xab; 8], [7; 32]);
        assert!(made.token.starts_with("rwt_abababababababab_"));
        let presented = parse_token(&made.token).expect("parses");
        assert_eq!(presented.id, made.id);
        assert!(secret_matches(presented.secret, &made.secret_sha256));
        let other = new_token([0xab; 8], [8; 32]);
        let forged = parse_token(&other.token).expect("parses");
        assert!(!secret_matches(forged.secret, &made.secret_sha256));
        assert!(!secret_matches(presented.secret, "short"));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "rwt_",
            "rwt_abc_def",
            "xyz_abababababababab_AAAA",
            "rwt_ABABABABABABABAB_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert_eq!(parse_token(bad), None, "{bad}");
        }
    }

    #[test]
    fn bearer_headers() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer   abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn policy() {
        assert_eq!(grpc_access("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(grpc_access("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"), Access::Open);
        assert_eq!(grpc_access("/runwarden.v1.ReportService/SubmitReport"), Access::Needs(Scope::ReportWrite));
        assert_eq!(grpc_access("/runwarden.v1.QueryService/ListWorkers"), Access::Needs(Scope::Read));
        assert_eq!(grpc_access("/runwarden.v1.QueryService/Unknown"), Access::Needs(Scope::Admin));
        assert_eq!(grpc_access("garbage"), Access::Needs(Scope::Admin));
        assert_eq!(operation_access("UpsertWorker"), Access::Needs(Scope::Admin));
        let mut methods: Vec<_> = POLICY.iter().map(|(_, m, _)| *m).collect();
        methods.sort_unstable();
        let before = methods.len();
        methods.dedup();
        assert_eq!(before, methods.len(), "REST routes find their scope by method name: names must be unique");
        assert!(Scope::Admin.allows(Scope::ReportWrite) && !Scope::Read.allows(Scope::ReportWrite));
        assert!(!Scope::ReportWrite.allows(Scope::Read));
    }

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_lifetime("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_lifetime("45"), Ok(Duration::from_secs(45)));
        assert!(parse_lifetime("0d").is_err());
        assert!(parse_lifetime("5y").is_err());
        assert!(parse_lifetime("99999999999999999999d").is_err());
        assert!(parse_lifetime("-1d").is_err());
    }

    #[test]
    fn bucket_admits_a_burst_then_the_rate() {
        let mut bucket = Bucket::full(3.0, 0.0);
        for _ in 0..3 {
            assert_eq!(bucket.admit(1.0, 3.0, 0.0), Admission::Admitted);
        }
        let Admission::RetryAfter(wait) = bucket.admit(1.0, 3.0, 0.0) else { panic!("over the burst") };
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-9);
        assert_eq!(bucket.admit(1.0, 3.0, 1.0), Admission::Admitted);
        assert!(matches!(bucket.admit(1.0, 3.0, 1.5), Admission::RetryAfter(_)));
    }

    proptest! {
        /// Whatever bytes arrive in an authorization header, parsing never panics, and what
        /// parses is shaped as documented.
        #[test]
        fn presented_tokens_from_arbitrary_text(text in ".{0,120}") {
            if let Some(p) = bearer(&text).and_then(parse_token) {
                prop_assert_eq!(p.id.len(), 16);
                prop_assert_eq!(p.secret.len(), 43);
            }
        }

        /// Over any sequence of arrivals, a bucket never admits more than burst + rate × elapsed.
        #[test]
        fn bucket_never_admits_more_than_its_budget(gaps in proptest::collection::vec(0.0f64..0.5, 1..300)) {
            let (rate, burst) = (10.0, 5.0);
            let mut bucket = Bucket::full(burst, 0.0);
            let (mut now, mut admitted) = (0.0, 0u32);
            for gap in gaps {
                now += gap;
                if bucket.admit(rate, burst, now) == Admission::Admitted {
                    admitted += 1;
                }
            }
            prop_assert!(f64::from(admitted) <= burst + rate * now + 1e-6);
        }
    }
}
