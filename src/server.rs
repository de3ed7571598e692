//! Assembly: one listener serves gRPC (h2c), grpc-web (HTTP/1.1 and h2), the REST shim,
//! health, reflection and `/metrics`. [`App::build`] opens and migrates the database, starts the
//! writer and binds the port (port 0 allowed); [`App::run_until_stopped`] serves until the
//! shutdown future fires, then drains: health NOT_SERVING, end live watches (UNAVAILABLE: their
//! clients reconnect elsewhere), stop accepting, finish in-flight requests (bounded), stop
//! background tasks, record the watches' streams as closed, flush the writer.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    middleware::{self, Next},
    routing::get,
};
use http::{HeaderName, HeaderValue, header};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tonic::{codec::CompressionEncoding, server::NamedService};
use tonic_health::{ServingStatus, server::HealthReporter};
use tonic_web::{GrpcWebLayer, GrpcWebService};
use tower::{
    Layer,
    util::{MapResponse, MapResponseLayer},
};
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

use crate::{
    api::{Clock, GuardianApi, QueryApi, ReportApi, Services, SystemClock, admin::AdminApi, workers::WorkerApi},
    auth::{self, Auth, GrpcAuth, GrpcAuthLayer},
    config::{Config, MAX_MESSAGE_BYTES},
    detector::Detector,
    front::{Front, GrpcContextLayer, REQUEST_ID, deadline_exceeded},
    guardian::Guardian,
    proto::{
        self,
        v1::{
            admin_service_server::AdminServiceServer, guardian_service_server::GuardianServiceServer,
            query_service_server::QueryServiceServer, worker_service_server::WorkerServiceServer,
        },
    },
    received::service::report_service_server::ReportServiceServer,
    rest::{self, RestState},
    store::{
        Store,
        ingest::{self, Writer},
    },
    telemetry,
    transport::{self, Limits},
};

/// How often the health task checks the database.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("the database schema is not current: run `runwarden migrate` or start without --no-migrate")]
    NotMigrated,
    #[error("reflection: {0}")]
    Reflection(String),
    #[error("guardian: {0}")]
    Guardian(String),
    #[error(
        "refusing to listen on {0} without authentication: create a token (`runwarden token create`), pass \
         --require-auth, listen on a loopback address, or pass --insecure if the network is trusted"
    )]
    Insecure(SocketAddr),
    #[error("TLS: {0}")]
    Tls(String),
}

pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Front,
    health: HealthReporter,
    writer: Writer,
    store: Store,
    guardian: Arc<Guardian>,
    detector: Arc<Detector>,
    retention: Arc<crate::retention::Retention>,
    /// Relays other replicas' live events (PostgreSQL).
    replica_events: Option<tokio::task::JoinHandle<()>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    auth: Arc<Auth>,
    alerts: Arc<crate::alerts::Alerts>,
    shutdown_timeout: Duration,
    background_tasks: bool,
}

/// The gRPC service names health answers for, beside the empty (whole server) name.
fn served_services() -> [&'static str; 6] {
    [
        "",
        ReportServiceServer::<ReportApi>::NAME,
        QueryServiceServer::<QueryApi>::NAME,
        GuardianServiceServer::<GuardianApi>::NAME,
        WorkerServiceServer::<WorkerApi>::NAME,
        AdminServiceServer::<AdminApi>::NAME,
    ]
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    for name in served_services() {
        health.set_service_status(name, status).await;
    }
}

impl App {
    pub async fn build(config: Config) -> Result<App, StartError> {
        App::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Builds with another source of "now" (tests use a manual clock).
    pub async fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<App, StartError> {
        let store = Store::connect(&config.database_url, &config.store).await?;
        if config.migrate {
            store.migrate().await?;
        } else if !store.is_migrated().await? {
            return Err(StartError::NotMigrated);
        }
        let tls = config.tls.as_ref().map(transport::acceptor).transpose().map_err(StartError::Tls)?;
        let auth = Auth::load(store.clone(), clock.clone(), config.auth.clone()).await?;
        if !config.listen.ip().is_loopback() && !auth.enforced() && !config.insecure {
            return Err(StartError::Insecure(config.listen));
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;

        let (ingest, writer) = ingest::spawn(store.clone(), config.ingest.clone());
        let guardian = Guardian::new(store.clone(), config.guardian.clone(), ingest.clone(), clock.clone())
            .await
            .map_err(|e| StartError::Guardian(e.to_string()))?;
        let detector = Detector::new(store.clone(), ingest.clone(), clock.clone(), config.detector.clone());
        let replica_events = crate::store::notify::spawn_listener(store.clone(), ingest.clone());
        let retention = crate::retention::Retention::new(store.clone(), clock.clone(), config.retention.clone());
        let alerts = crate::alerts::Alerts::new(store.clone(), clock.clone(), config.alerts.clone());
        let services = Arc::new(Services { store: store.clone(), ingest, clock, guardian: guardian.clone() });
        let report = ReportApi::new(services.clone());
        let query = QueryApi::new(services.clone());
        let guardian_api = GuardianApi::new(guardian.clone(), services.ingest.clone());
        let worker_api = WorkerApi::new(services.clone());
        let admin_api = AdminApi::new(auth.clone(), alerts.clone());
        let exported = services.clone();

        let (health, health_service) = tonic_health::server::health_reporter();
        set_health(&health, ServingStatus::Serving).await;

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| StartError::Reflection(e.to_string()))?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| StartError::Reflection(e.to_string()))?;

        // Every runwarden service takes the same limits and compression.
        macro_rules! service {
            ($server:ident, $api:expr) => {
                $server::new($api)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .accept_compressed(CompressionEncoding::Gzip)
                    .send_compressed(CompressionEncoding::Gzip)
            };
        }
        let report_service =
            ShedWhenFull { inner: service!(ReportServiceServer, report.clone()), ingest: services.ingest.clone() };
        let query_service = service!(QueryServiceServer, query.clone());
        let guardian_service = service!(GuardianServiceServer, guardian_api.clone());
        let worker_service = service!(WorkerServiceServer, worker_api.clone());
        let admin_service = service!(AdminServiceServer, admin_api);
        let guard = GrpcAuthLayer(auth.clone());

        let grpc = Router::new()
            .route_service(&grpc_path(&report_service), grpc_web(&guard, report_service))
            .route_service(&grpc_path(&query_service), grpc_web(&guard, query_service))
            .route_service(&grpc_path(&guardian_service), grpc_web(&guard, guardian_service))
            .route_service(&grpc_path(&worker_service), grpc_web(&guard, worker_service))
            .route_service(&grpc_path(&admin_service), grpc_web(&guard, admin_service))
            .route_service(&grpc_path(&health_service), GrpcWebLayer::new().layer(health_service))
            .route_service(&grpc_path(&reflection_v1), reflection_v1)
            .route_service(&grpc_path(&reflection_v1alpha), reflection_v1alpha);

        // Native gRPC takes the short stack, everything else the full one (crate::front).
        let native =
            grpc.clone().fallback(rest::not_found).layer(GrpcContextLayer { timeout: config.limits.request_timeout });
        let metrics = telemetry::metrics_handle();
        let full = Router::new()
            .merge(grpc)
            .merge(
                rest::router(RestState { report, query, guardian: guardian_api, workers: worker_api })
                    .route_layer(middleware::from_fn_with_state(auth.clone(), auth::rest_guard))
                    .layer(DefaultBodyLimit::max(MAX_MESSAGE_BYTES)),
            )
            .route(
                "/metrics",
                get(move || {
                    let (metrics, services) = (metrics.clone(), exported.clone());
                    async move {
                        let mut text = metrics.render();
                        match crate::api::prometheus::render(&services).await {
                            Ok(section) => text.push_str(&section),
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot compute the per-worker metrics");
                                text.push_str("# per-worker metrics unavailable: database error\n");
                            }
                        }
                        text
                    }
                })
                .layer(middleware::from_fn_with_state(auth.clone(), auth::metrics_guard)),
            )
            .merge(crate::dashboard::routes())
            .fallback(rest::not_found)
            .layer(middleware::from_fn_with_state(config.limits.request_timeout, request_timeout))
            .layer(cors())
            .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let id = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
            }))
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid));
        let router = Front::new(native, full);

        tracing::info!(
            addr = %local_addr,
            database = %redact(&config.database_url),
            tls = tls.is_some(),
            mutual_tls = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
            auth = if auth.enforced() { "enforced" } else { "off (no token exists)" },
            "runwarden ready"
        );
        Ok(App {
            listener,
            local_addr,
            router,
            health,
            writer,
            store,
            guardian,
            detector,
            retention,
            replica_events,
            tls,
            limits: config.limits.clone(),
            auth,
            alerts,
            shutdown_timeout: config.shutdown_timeout,
            background_tasks: config.background_tasks,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// The stream guardian (tests tick it by hand).
    pub fn guardian(&self) -> Arc<Guardian> {
        self.guardian.clone()
    }

    /// Retention (tests run its passes by hand).
    pub fn retention(&self) -> Arc<crate::retention::Retention> {
        self.retention.clone()
    }

    /// The alert sender (tests run its passes by hand).
    pub fn alerts(&self) -> Arc<crate::alerts::Alerts> {
        self.alerts.clone()
    }

    /// Tokens and their checks (tests create tokens through it).
    pub fn auth(&self) -> Arc<Auth> {
        self.auth.clone()
    }

    /// The missed-run detector (tests run its passes by hand).
    pub fn detector(&self) -> Arc<Detector> {
        self.detector.clone()
    }

    /// Serves until `shutdown` completes, then drains (see the module docs).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let App {
            listener,
            router,
            health,
            writer,
            store,
            guardian,
            detector,
            retention,
            replica_events,
            tls,
            limits,
            alerts,
            shutdown_timeout,
            background_tasks,
            ..
        } = self;
        let (draining_tx, mut draining) = watch::channel(false);
        let watches = guardian.clone();
        let probe = spawn_health_probe(store.clone(), health.clone(), draining.clone());
        let guardian_task = background_tasks.then(|| tokio::spawn(crate::guardian::run(guardian, draining.clone())));
        let detector_task = background_tasks.then(|| tokio::spawn(crate::detector::run(detector, draining.clone())));
        let retention_task = background_tasks.then(|| tokio::spawn(crate::retention::run(retention, draining.clone())));
        let alerts_task = background_tasks.then(|| tokio::spawn(crate::alerts::run(alerts, draining.clone())));

        let signal_health = health.clone();
        let signal_watches = watches.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutdown requested: draining");
            set_health(&signal_health, ServingStatus::NotServing).await;
            let _ = draining_tx.send(true);
            signal_watches.stop_watches();
        };
        let server = transport::serve(listener, router, tls, &limits, signal);
        let deadline = async move {
            let _ = draining.wait_for(|d| *d).await;
            tokio::time::sleep(shutdown_timeout).await;
        };
        let result = tokio::select! {
            result = server => result,
            () = deadline => {
                tracing::warn!(timeout_s = shutdown_timeout.as_secs(), "in-flight requests did not finish in time; closing them");
                Ok(())
            }
        };
        join_background(guardian_task, "guardian task failed").await;
        join_background(detector_task, "detector task failed").await;
        join_background(retention_task, "retention task failed").await;
        join_background(alerts_task, "alert sender failed").await;
        // Live watches record their streams as closed, which needs the database.
        if !watches.watches_closed(WATCHES_CLOSE_WITHIN).await {
            tracing::warn!(timeout_s = WATCHES_CLOSE_WITHIN.as_secs(), "live watches did not close in time");
        }
        writer.shutdown().await;
        probe.abort();
        if let Some(task) = replica_events {
            task.abort();
        }
        store.close().await;
        tracing::info!("stopped");
        result
    }
}

/// How long a stopping server waits for its live watches to record their streams as closed.
const WATCHES_CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// Waits for a background task started by [`App::run_until_stopped`], if it was started.
async fn join_background(task: Option<tokio::task::JoinHandle<()>>, failure: &str) {
    if let Some(Err(e)) = match task {
        Some(task) => Some(task.await),
        None => None,
    } {
        tracing::warn!(error = %e, "{failure}");
    }
}

/// `/{package.Service}/{*rest}`: where a tonic service is routed.
fn grpc_path<S: NamedService>(_: &S) -> String {
    format!("/{}/{{*rest}}", S::NAME)
}

type GrpcResponse = http::Response<tonic::body::Body>;
type GrpcResponseMap = fn(GrpcResponse) -> GrpcResponse;

/// Wraps a tonic service for the browser (grpc-web), auth, and the message-size convention.
fn grpc_web<S>(guard: &GrpcAuthLayer, service: S) -> GrpcWebService<GrpcAuth<MapResponse<S, GrpcResponseMap>>>
where
    S: tower::Service<Request, Response = GrpcResponse>,
{
    let map: GrpcResponseMap = too_large_is_resource_exhausted;
    GrpcWebLayer::new().layer(guard.layer(MapResponseLayer::new(map).layer(service)))
}

/// Sheds unary ingest calls while the writer's queue is full, before their body is decoded: under
/// a flood, a refusal then costs little more than the HTTP/2 frames, and the CPU goes to the
/// writer committing what was admitted.
///
/// A `SubmitReport` that finds the queue full first waits up to the admission wait
/// (`admission_wait_ms`, never more than half its `grpc-timeout`) for a place, in arrival order,
/// without reading its body; if one comes up it is admitted into that place, otherwise it gets
/// RESOURCE_EXHAUSTED. Callers that retry at once then cycle once per wait instead of as fast as
/// the CPU can refuse them, and a short burst is absorbed instead of refused. `SubmitReportBatch`
/// is refused at once. (A call that passes this check and finds the queue full after decoding
/// waits in the handler the same way.)
#[derive(Clone)]
struct ShedWhenFull<S> {
    inner: S,
    ingest: ingest::Ingest,
}

impl<S: NamedService> NamedService for ShedWhenFull<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> ShedWhenFull<S> {
    /// The calls shed early; client streams are admitted report by report instead.
    fn sheds(path: &str) -> bool {
        Self::waits(path) || path.ends_with("/SubmitReportBatch")
    }

    /// The calls that wait for a place before they are shed.
    fn waits(path: &str) -> bool {
        path.ends_with("/SubmitReport")
    }
}

/// RESOURCE_EXHAUSTED for a call shed before decoding, once its body has been read (not decoded):
/// answering while the client still sends makes HTTP/2 reset the stream, which clients report as a
/// transport error, not the status.
async fn refuse_queue_full<B>(request: http::Request<B>, capacity: usize) -> GrpcResponse
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    use http_body_util::BodyExt;
    let status: tonic::Status = ingest::queue_full(capacity).into();
    let mut response = status.into_http::<tonic::body::Body>();
    if let Some(content_type) = request.headers().get(header::CONTENT_TYPE) {
        response.headers_mut().insert(header::CONTENT_TYPE, content_type.clone());
    }
    let mut body = std::pin::pin!(request.into_body());
    let mut read = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        read += frame.data_ref().map_or(0, prost::bytes::Buf::remaining);
        if read > MAX_MESSAGE_BYTES {
            break;
        }
    }
    response
}

impl<S, B> tower::Service<http::Request<B>> for ShedWhenFull<S>
where
    S: tower::Service<http::Request<B>, Response = GrpcResponse> + Clone + Send + 'static,
    S::Error: Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    type Response = GrpcResponse;
    type Error = S::Error;
    type Future =
        futures::future::Either<futures::future::BoxFuture<'static, Result<GrpcResponse, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if !(self.ingest.is_full() && Self::sheds(path)) {
            return futures::future::Either::Right(self.inner.call(request));
        }
        let capacity = self.ingest.capacity();
        // A caller whose deadline comes sooner hears the refusal before it, not DEADLINE_EXCEEDED.
        let deadline = request.headers().get("grpc-timeout").and_then(|v| crate::api::grpc_timeout(v.as_bytes()));
        let wait = if Self::waits(path) {
            crate::api::report::wait_within(self.ingest.admission_wait(), deadline)
        } else {
            Duration::ZERO
        };
        if wait.is_zero() {
            return futures::future::Either::Left(Box::pin(
                async move { Ok(refuse_queue_full(request, capacity).await) },
            ));
        }
        // The service polled ready goes with the call; this one keeps a fresh clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let ingest = self.ingest.clone();
        futures::future::Either::Left(Box::pin(async move {
            match ingest.reserve(wait).await {
                ingest::Admission::Reserved(place) => {
                    request.extensions_mut().insert(place);
                    inner.call(request).await
                }
                // The handler answers UNAVAILABLE.
                ingest::Admission::Closed => inner.call(request).await,
                ingest::Admission::TimedOut => Ok(refuse_queue_full(request, capacity).await),
            }
        }))
    }
}

/// Cuts off a call that takes longer than the request timeout: DEADLINE_EXCEEDED for gRPC and
/// grpc-web (in the caller's content type), 504 for REST. A server-streaming call is done, for
/// this purpose, once its response starts.
async fn request_timeout(State(limit): State<Duration>, request: Request, next: Next) -> axum::response::Response {
    let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
    let grpc = content_type.as_ref().and_then(|c| c.to_str().ok()).is_some_and(|c| c.starts_with("application/grpc"));
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => deadline_exceeded(limit, content_type, grpc),
    }
}

/// tonic answers a message over the size limit with OUT_OF_RANGE; gRPC's other implementations
/// (Go, Java, C++) answer RESOURCE_EXHAUSTED, which is what clients retry and alert on. And it
/// answers a request message that does not decode (garbage bytes, nesting beyond prost's
/// recursion limit) with INTERNAL, which reads as our fault and invites retries: it is the
/// client's, INVALID_ARGUMENT.
fn too_large_is_resource_exhausted(mut response: GrpcResponse) -> GrpcResponse {
    let headers = response.headers_mut();
    let message = headers.get("grpc-message").and_then(|m| m.to_str().ok()).map(|m| m.replace("%20", " "));
    let status = headers.get("grpc-status").and_then(|s| s.to_str().ok()).unwrap_or_default();
    let rewritten = match (status, message.as_deref()) {
        ("11", Some(m)) if m.contains("message length too large") => Some("8"),
        ("13", Some(m)) if m.starts_with("failed to decode Protobuf message") => Some("3"),
        _ => None,
    };
    if let Some(code) = rewritten {
        headers.insert("grpc-status", HeaderValue::from_static(code));
    }
    response
}

/// Browsers may call grpc-web and REST from other origins; they must see the gRPC status.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods([http::Method::GET, http::Method::POST, http::Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("x-grpc-web"),
            HeaderName::from_static("x-user-agent"),
            HeaderName::from_static("grpc-timeout"),
            REQUEST_ID,
        ])
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
            REQUEST_ID,
        ])
        .max_age(Duration::from_secs(3600))
}

/// Marks the services NOT_SERVING while the database does not answer, SERVING when it does.
fn spawn_health_probe(store: Store, health: HealthReporter, draining: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut serving = true;
        let mut interval = tokio::time::interval(HEALTH_PROBE_INTERVAL);
        loop {
            interval.tick().await;
            if *draining.borrow() {
                return;
            }
            let ok = store.ping().await.is_ok();
            if ok != serving {
                serving = ok;
                if ok {
                    tracing::info!("database reachable again: SERVING");
                    set_health(&health, ServingStatus::Serving).await;
                } else {
                    tracing::warn!("database unreachable: NOT_SERVING");
                    set_health(&health, ServingStatus::NotServing).await;
                }
            }
        }
    })
}

/// A database URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
