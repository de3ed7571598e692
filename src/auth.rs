//! Authentication, authorization and per-token rate limits on every face: a tower layer in
//! front of each gRPC service (inside grpc-web), an axum middleware on the REST routes and
//! `/metrics`. What each call needs is [`crate::domain::access`]'s policy.
//!
//! Tokens live in the database and are cached here whole (they are few). The cache reloads at
//! most every [`REFRESH`], and at most every [`REFRESH_ON_MISS`] when an unknown token arrives,
//! so a token created or revoked on another replica (or with `runwarden token`) takes effect
//! within seconds; changes made through this replica's AdminService take effect at once.
//!
//! Auth is enforced when any token was ever created (revoking every token does not open the
//! server) or when `--require-auth` is set. Messages name the reason, never the token.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex, RwLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use http::{HeaderValue, header::AUTHORIZATION};
use sea_orm::DbErr;

use crate::{
    api::Clock,
    domain::access::{self, Access, Admission, Bucket, Scope},
    error::Error,
    store::{
        Store, from_micros, to_micros,
        tokens::{self, CreateError, TokenRow},
    },
};

/// Longest a cached token list is trusted.
pub const REFRESH: Duration = Duration::from_secs(5);
/// Shortest gap between reloads forced by unknown tokens (so garbage tokens cannot hammer the
/// database).
pub const REFRESH_ON_MISS: Duration = Duration::from_secs(1);

/// Auth settings (`[auth]` and `[limits]` in the config file, flags for the first two).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Enforce tokens even before the first one exists.
    pub require: bool,
    /// Serve `/metrics` without a token.
    pub metrics_open: bool,
    /// Requests per second each token may make on average; 0 turns limiting off.
    pub rate_per_second: f64,
    /// Requests a token may make at once above the rate.
    pub burst: f64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { require: false, metrics_open: false, rate_per_second: 1000.0, burst: 2000.0 }
    }
}

/// Who is calling, as far as authorization is concerned; put in each request's extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `None` when auth is off.
    token: Option<Arc<TokenInfo>>,
}

#[derive(Debug)]
struct TokenInfo {
    id: String,
    name: String,
    scope: Scope,
    worker_prefix: Option<String>,
}

impl Caller {
    /// A caller on a server without auth: may do everything.
    pub fn unrestricted() -> Caller {
        Caller { token: None }
    }

    /// The caller the auth layer attached to a request. Missing means the layer did not run,
    /// which is a wiring bug: refuse rather than allow.
    pub fn of(extensions: &http::Extensions) -> Result<Caller, Error> {
        extensions.get::<Caller>().cloned().ok_or_else(|| Error::internal("request reached a service without auth"))
    }

    /// Refuses reports for workers outside a `report:write` token's worker prefix.
    pub fn may_report_for(&self, worker_name: &str) -> Result<(), Error> {
        let Some(token) = &self.token else { return Ok(()) };
        match &token.worker_prefix {
            Some(prefix) if token.scope == Scope::ReportWrite && !worker_name.starts_with(prefix.as_str()) => {
                Err(Error::PermissionDenied(format!(
                    "token {:?} may only report for workers whose name starts with {prefix:?}, not {worker_name:?}",
                    token.name
                )))
            }
            _ => Ok(()),
        }
    }

    pub fn token_name(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.name.as_str())
    }
}

struct Entry {
    info: Arc<TokenInfo>,
    secret_sha256: String,
    expires_at: Option<DateTime<Utc>>,
    revoked: bool,
}

struct Snapshot {
    tokens: HashMap<String, Entry>,
    loaded: Instant,
}

/// The token cache, the policy check and the rate limiter.
pub struct Auth {
    store: Store,
    clock: Arc<dyn Clock>,
    config: AuthConfig,
    snapshot: RwLock<Arc<Snapshot>>,
    reloading: tokio::sync::Mutex<()>,
    buckets: Mutex<HashMap<String, Bucket>>,
    epoch: Instant,
}

impl Auth {
    /// Loads every token; fails if the database cannot be read.
    pub async fn load(store: Store, clock: Arc<dyn Clock>, config: AuthConfig) -> Result<Arc<Auth>, DbErr> {
        let snapshot = Arc::new(read_snapshot(&store).await?);
        Ok(Arc::new(Auth {
            store,
            clock,
            config,
            snapshot: RwLock::new(snapshot),
            reloading: tokio::sync::Mutex::new(()),
            buckets: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        }))
    }

    fn current(&self) -> Arc<Snapshot> {
        self.snapshot.read().map_or_else(|poisoned| poisoned.into_inner().clone(), |s| s.clone())
    }

    /// Whether calls need a token now.
    pub fn enforced(&self) -> bool {
        self.config.require || !self.current().tokens.is_empty()
    }

    pub fn metrics_open(&self) -> bool {
        self.config.metrics_open
    }

    /// Reloads the token list now.
    pub async fn reload(&self) -> Result<(), DbErr> {
        let _guard = self.reloading.lock().await;
        self.reload_locked().await
    }

    async fn reload_locked(&self) -> Result<(), DbErr> {
        let fresh = Arc::new(read_snapshot(&self.store).await?);
        match self.snapshot.write() {
            Ok(mut s) => *s = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }

    /// Reloads if the cache is older than `max_age` and no other request is reloading already.
    async fn refresh_if_older(&self, max_age: Duration) {
        if self.current().loaded.elapsed() < max_age {
            return;
        }
        let Ok(_guard) = self.reloading.try_lock() else { return };
        if self.current().loaded.elapsed() < max_age {
            return;
        }
        if let Err(e) = self.reload_locked().await {
            // Keep serving with what is known; the next request tries again.
            tracing::warn!(error = %e, "cannot reload API tokens; using the cached list");
        }
    }

    /// Checks a request's `authorization` header against what the call needs.
    pub async fn check(&self, authorization: Option<&HeaderValue>, access: Access) -> Result<Caller, Error> {
        let Access::Needs(needed) = access else { return Ok(Caller::unrestricted()) };
        self.refresh_if_older(REFRESH).await;
        if !self.enforced() {
            return Ok(Caller::unrestricted());
        }
        let header = authorization.and_then(|h| h.to_str().ok()).unwrap_or_default();
        let Some(presented) = access::bearer(header) else {
            return Err(refused(
                None,
                "missing",
                "this server requires a token: send the header `authorization: Bearer <token>`",
            ));
        };
        let Some(presented) = access::parse_token(presented) else {
            return Err(refused(None, "malformed", "the bearer token is not a runwarden token (rwt_…)"));
        };
        if !self.current().tokens.contains_key(presented.id) {
            self.refresh_if_older(REFRESH_ON_MISS).await;
        }
        let snapshot = self.current();
        let entry =
            snapshot.tokens.get(presented.id).filter(|e| access::secret_matches(presented.secret, &e.secret_sha256));
        let Some(entry) = entry else {
            return Err(refused(Some(presented.id), "unknown", "unknown token"));
        };
        if entry.revoked {
            return Err(refused(Some(presented.id), "revoked", &format!("token {:?} was revoked", entry.info.name)));
        }
        if entry.expires_at.is_some_and(|at| at <= self.clock.now()) {
            return Err(refused(Some(presented.id), "expired", &format!("token {:?} has expired", entry.info.name)));
        }
        if !entry.info.scope.allows(needed) {
            tracing::info!(token_id = %entry.info.id, scope = %entry.info.scope, needed = %needed, "call refused: scope");
            metrics::counter!("runwarden_auth_refused_total", "reason" => "scope").increment(1);
            return Err(Error::PermissionDenied(format!(
                "token {:?} has scope {}; this call needs {needed}",
                entry.info.name, entry.info.scope
            )));
        }
        self.admit(&entry.info)?;
        Ok(Caller { token: Some(entry.info.clone()) })
    }

    fn admit(&self, token: &TokenInfo) -> Result<(), Error> {
        let (rate, burst) = (self.config.rate_per_second, self.config.burst.max(1.0));
        if rate <= 0.0 {
            return Ok(());
        }
        let now = self.epoch.elapsed().as_secs_f64();
        let admission = match self.buckets.lock() {
            Ok(mut buckets) => {
                buckets.entry(token.id.clone()).or_insert_with(|| Bucket::full(burst, now)).admit(rate, burst, now)
            }
            Err(_) => Admission::Admitted,
        };
        match admission {
            Admission::Admitted => Ok(()),
            Admission::RetryAfter(retry_after) => {
                metrics::counter!("runwarden_auth_refused_total", "reason" => "rate").increment(1);
                Err(Error::RateLimited {
                    message: format!(
                        "token {:?} is over its rate limit ({rate} requests/s, bursts of {burst}); retry in {} ms",
                        token.name,
                        retry_after.as_millis().max(1)
                    ),
                    retry_after,
                })
            }
        }
    }

    /// Creates a token and returns the row and the token string (shown once).
    pub async fn create_token(
        &self,
        name: &str,
        scope: Scope,
        worker_prefix: Option<String>,
        lifetime: Option<Duration>,
    ) -> Result<(TokenRow, String), Error> {
        let (row, token) = new_token_row(name, scope, worker_prefix, lifetime, self.clock.now())?;
        let txn = self.store.begin_write().await?;
        let row = tokens::insert(&txn, row).await.map_err(|e| match e {
            CreateError::NameTaken(name) => Error::AlreadyExists(format!("a token named {name:?} already exists")),
            CreateError::Db(e) => e.into(),
        })?;
        txn.commit().await?;
        self.reload().await?;
        tracing::info!(token_id = %row.id, name = %row.name, scope = %row.scope, "token created");
        Ok((row, token))
    }

    pub async fn revoke_token(&self, id_or_name: &str) -> Result<TokenRow, Error> {
        let txn = self.store.begin_write().await?;
        let row = tokens::revoke(&txn, id_or_name, self.clock.now())
            .await?
            .ok_or_else(|| Error::NotFound(format!("no token with id or name {id_or_name:?}")))?;
        txn.commit().await?;
        self.reload().await?;
        tracing::info!(token_id = %row.id, name = %row.name, "token revoked");
        Ok(row)
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenRow>, Error> {
        Ok(tokens::all(self.store.reader()).await?)
    }
}

/// Logs and counts a refused token (by its public id at most) and builds the error.
fn refused(token_id: Option<&str>, reason: &'static str, message: &str) -> Error {
    tracing::info!(token_id = token_id.unwrap_or("-"), reason, "call refused: authentication");
    metrics::counter!("runwarden_auth_refused_total", "reason" => reason).increment(1);
    Error::Unauthenticated(message.to_owned())
}

async fn read_snapshot(store: &Store) -> Result<Snapshot, DbErr> {
    let rows = tokens::all(store.reader()).await?;
    let mut tokens = HashMap::with_capacity(rows.len());
    for row in rows {
        let Ok(scope) = row.scope.parse::<Scope>() else {
            tracing::warn!(token_id = %row.id, scope = %row.scope, "token with an unknown scope ignored");
            continue;
        };
        let info = Arc::new(TokenInfo {
            id: row.id.clone(),
            name: row.name.clone(),
            scope,
            worker_prefix: row.worker_prefix.clone().filter(|p| !p.is_empty()),
        });
        let entry = Entry {
            info,
            secret_sha256: row.secret_sha256,
            expires_at: row.expires_at_us.map(from_micros),
            revoked: row.revoked_at_us.is_some(),
        };
        tokens.insert(row.id, entry);
    }
    Ok(Snapshot { tokens, loaded: Instant::now() })
}

/// A new token's row (not yet stored) and its string, with fresh randomness.
pub fn new_token_row(
    name: &str,
    scope: Scope,
    worker_prefix: Option<String>,
    lifetime: Option<Duration>,
    now: DateTime<Utc>,
) -> Result<(TokenRow, String), Error> {
    let name = name.trim();
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(Error::invalid("name", "must be 1 to 128 printable characters"));
    }
    let worker_prefix = worker_prefix.filter(|p| !p.is_empty());
    if worker_prefix.is_some() && scope != Scope::ReportWrite {
        return Err(Error::invalid("worker_prefix", "only report:write tokens take a worker prefix"));
    }
    if worker_prefix.as_ref().is_some_and(|p| p.len() > 200) {
        return Err(Error::invalid("worker_prefix", "must be at most 200 characters"));
    }
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut id).and_then(|()| getrandom::fill(&mut secret)).map_err(Error::internal)?;
    let made = access::new_token(id, secret);
    let expires_at = match lifetime {
        Some(l) => {
            let l = chrono::TimeDelta::from_std(l).map_err(|_| Error::invalid("expires", "is too far away"))?;
            Some(to_micros(now + l))
        }
        None => None,
    };
    let row = TokenRow {
        id: made.id,
        name: name.to_owned(),
        scope: scope.as_str().to_owned(),
        worker_prefix,
        secret_sha256: made.secret_sha256,
        created_at_us: to_micros(now),
        expires_at_us: expires_at,
        revoked_at_us: None,
    };
    Ok((row, made.token))
}

/// The tower layer that guards one gRPC service (placed inside grpc-web's translation).
#[derive(Clone)]
pub struct GrpcAuthLayer(pub Arc<Auth>);

impl<S> tower::Layer<S> for GrpcAuthLayer {
    type Service = GrpcAuth<S>;

    fn layer(&self, inner: S) -> GrpcAuth<S> {
        GrpcAuth { auth: self.0.clone(), inner }
    }
}

#[derive(Clone)]
pub struct GrpcAuth<S> {
    auth: Arc<Auth>,
    inner: S,
}

type GrpcResponse = http::Response<tonic::body::Body>;

impl<S, B> tower::Service<http::Request<B>> for GrpcAuth<S>
where
    S: tower::Service<http::Request<B>, Response = GrpcResponse> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = GrpcResponse;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<GrpcResponse, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone is not ready; the ready service is taken for this call.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let auth = self.auth.clone();
        Box::pin(async move {
            let access = access::grpc_access(request.uri().path());
            match auth.check(request.headers().get(AUTHORIZATION), access).await {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(e) => Ok(tonic::Status::from(e).into_http()),
            }
        })
    }
}

/// Guards the REST routes: the scope a route needs is that of the RPC it implements.
pub async fn rest_guard(
    State(auth): State<Arc<Auth>>,
    matched: Option<MatchedPath>,
    mut request: Request,
    next: Next,
) -> Response {
    let method = request.method().as_str().to_ascii_lowercase();
    let access = match matched.as_ref().map(MatchedPath::as_str) {
        Some("/api/v1/openapi.json") => Access::Open,
        Some(path) => crate::rest::ROUTES
            .iter()
            .find(|r| r.path == path && r.method == method)
            .map_or(Access::Needs(Scope::Admin), |r| access::operation_access(r.operation)),
        None => Access::Needs(Scope::Admin),
    };
    match auth.check(request.headers().get(AUTHORIZATION), access).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

/// Guards `/metrics`: `read` unless configured open.
pub async fn metrics_guard(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response {
    let access = if auth.metrics_open() { Access::Open } else { Access::Needs(Scope::Read) };
    match auth.check(request.headers().get(AUTHORIZATION), access).await {
        Ok(_) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Caller::of(&parts.extensions)
    }
}
