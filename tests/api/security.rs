//! Security: every RPC and REST route against no token, a malformed, revoked, expired,
//! wrong-scope and right token; worker-prefix tokens; rate limits; token management over the
//! AdminService; the non-loopback refusal; TLS and mutual TLS; connection limits; and that no
//! token or hash reaches the logs.

use std::{collections::BTreeMap, time::Duration};

use prost::Message;
use runwarden::{
    Config,
    domain::access::Scope,
    proto::v1::{
        CreateTokenRequest, ExecutionReport, ListTokensRequest, ListWorkersRequest, Outcome, RevokeTokenRequest,
        SubmitReportBatchRequest, SubmitReportRequest, TokenScope, admin_service_client::AdminServiceClient,
        query_service_client::QueryServiceClient, report_service_client::ReportServiceClient,
    },
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, Request, transport::Channel};
use tonic_prost::ProstCodec;
use tonic_types::StatusExt;

use crate::{
    backend_tests,
    helpers::{Backend, ManualClock, TestApp, TestDatabase, spawn_app_with_clock},
};

backend_tests!(
    every_call_checks_its_token,
    worker_prefix_tokens_only_report_for_their_workers,
    tokens_are_managed_over_the_admin_service
);

/// The scope each RPC needs, written out here independently of the server's policy table.
fn expected_scope(service: &str, method: &str) -> Option<Scope> {
    let scope = match (service, method) {
        ("ReportService", _) => Scope::ReportWrite,
        ("GuardianService", "OpenStream" | "Heartbeat" | "HeartbeatBatch" | "CloseStream") => Scope::ReportWrite,
        ("GuardianService" | "QueryService", _) => Scope::Read,
        ("WorkerService" | "AdminService", _) => Scope::Admin,
        _ => return None,
    };
    Some(scope)
}

/// Every RPC the server's descriptors declare: (service, method, client streaming, server streaming).
fn every_rpc() -> Vec<(String, String, bool, bool)> {
    let set = prost_types::FileDescriptorSet::decode(runwarden::proto::FILE_DESCRIPTOR_SET).expect("descriptors");
    let mut rpcs = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == "runwarden.v1") {
        for service in &file.service {
            for method in &service.method {
                rpcs.push((
                    service.name().to_owned(),
                    method.name().to_owned(),
                    method.client_streaming(),
                    method.server_streaming(),
                ));
            }
        }
    }
    rpcs
}

/// Calls `/runwarden.v1.{service}/{method}` over native gRPC with an empty message (or an empty
/// stream) and returns the status code (OK when the call was admitted and answered).
async fn raw_call(channel: &Channel, rpc: &(String, String, bool, bool), token: Option<&str>) -> Code {
    let (service, method, client_streaming, server_streaming) = rpc;
    let path: http::uri::PathAndQuery = format!("/runwarden.v1.{service}/{method}").parse().expect("path");
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let codec = ProstCodec::<(), ()>::default();
    fn authorize<T>(mut request: Request<T>, token: Option<&str>) -> Request<T> {
        if let Some(token) = token {
            request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
        }
        request
    }
    let result = match (client_streaming, server_streaming) {
        (false, false) => grpc.unary(authorize(Request::new(()), token), path, codec).await.map(|_| ()),
        (false, true) => grpc.server_streaming(authorize(Request::new(()), token), path, codec).await.map(|_| ()),
        (true, false) => grpc
            .client_streaming(authorize(Request::new(tokio_stream::empty::<()>()), token), path, codec)
            .await
            .map(|_| ()),
        (true, true) => {
            grpc.streaming(authorize(Request::new(tokio_stream::empty::<()>()), token), path, codec).await.map(|_| ())
        }
    };
    result.err().map_or(Code::Ok, |status| status.code())
}

/// Same over grpc-web (HTTP/1.1): the status when it is in the response headers, as refusals
/// are; `None` when the call was admitted (its status follows in the body).
async fn grpc_web_refusal(app: &TestApp, service: &str, method: &str, token: Option<&str>) -> Option<String> {
    let mut request = app
        .http
        .post(app.url(&format!("/runwarden.v1.{service}/{method}")))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(vec![0u8, 0, 0, 0, 0]);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("grpc-web call");
    let status = response.headers().get("grpc-status").and_then(|v| v.to_str().ok()).map(str::to_owned);
    status.filter(|s| s == "16" || s == "7")
}

struct Tokens {
    admin: String,
    read: String,
    write: String,
    revoked: String,
    expired: String,
}

/// Creates one token of each kind; the clock then moves past the expiring one's lifetime.
async fn tokens(app: &TestApp, clock: &ManualClock) -> Tokens {
    let create = |name: &'static str, scope, lifetime| {
        let auth = app.auth.clone();
        async move { auth.create_token(name, scope, None, lifetime).await.expect("create token").1 }
    };
    let expired = create("expiring", Scope::Admin, Some(Duration::from_secs(60))).await;
    let revoked = create("revoked", Scope::Admin, None).await;
    app.auth.revoke_token("revoked").await.expect("revoke");
    clock.advance(120);
    Tokens {
        admin: create("admin", Scope::Admin, None).await,
        read: create("reader", Scope::Read, None).await,
        write: create("writer", Scope::ReportWrite, None).await,
        revoked,
        expired,
    }
}

async fn every_call_checks_its_token(backend: Backend) {
    let clock = ManualClock::starting_now();
    let app = spawn_app_with_clock(TestDatabase::create(backend).await, |_| {}, clock.clone()).await;
    let t = tokens(&app, &clock).await;
    let malformed = "not-a-runwarden-token";
    let forged = format!("{}x", &t.admin[..t.admin.len() - 1]);

    let rpcs = every_rpc();
    assert!(rpcs.len() >= 24, "found the RPCs: {rpcs:?}");
    for rpc in &rpcs {
        let (service, method, ..) = rpc;
        let needed = expected_scope(service, method)
            .unwrap_or_else(|| panic!("{service}.{method} is new: decide here which scope it needs"));
        let cases: [(&str, Option<&str>, bool); 8] = [
            ("no token", None, false),
            ("malformed", Some(malformed), false),
            ("forged secret", Some(&forged), false),
            ("revoked", Some(&t.revoked), false),
            ("expired", Some(&t.expired), false),
            ("read", Some(&t.read), true),
            ("report:write", Some(&t.write), true),
            ("admin", Some(&t.admin), true),
        ];
        for (label, token, valid) in cases {
            let allowed = match label {
                "read" => Scope::Read.allows(needed),
                "report:write" => Scope::ReportWrite.allows(needed),
                "admin" => true,
                _ => false,
            };
            let expected = match (valid, allowed) {
                (false, _) => Some(Code::Unauthenticated),
                (true, false) => Some(Code::PermissionDenied),
                (true, true) => None,
            };
            let code = raw_call(&app.channel, rpc, token).await;
            match expected {
                Some(code_expected) => assert_eq!(code, code_expected, "{service}.{method} with {label}"),
                None => assert!(
                    !matches!(code, Code::Unauthenticated | Code::PermissionDenied),
                    "{service}.{method} with {label} was refused: {code:?}"
                ),
            }
            let web = grpc_web_refusal(&app, service, method, token).await;
            let web_expected = expected.map(|c| (c as i32).to_string());
            assert_eq!(web, web_expected, "grpc-web {service}.{method} with {label}");
        }
    }

    // Health and reflection stay open.
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel.clone());
    health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.expect("health is open");
    // A method the policy does not list needs admin (fail closed); a service nobody serves is
    // UNIMPLEMENTED, for gRPC clients as a gRPC status.
    let unknown_method = ("QueryService".to_owned(), "Nope".to_owned(), false, false);
    assert_eq!(raw_call(&app.channel, &unknown_method, None).await, Code::Unauthenticated);
    assert_eq!(raw_call(&app.channel, &unknown_method, Some(&t.read)).await, Code::PermissionDenied);
    assert_eq!(raw_call(&app.channel, &unknown_method, Some(&t.admin)).await, Code::Unimplemented);
    let unknown_service = ("Nothing".to_owned(), "Here".to_owned(), false, false);
    assert_eq!(raw_call(&app.channel, &unknown_service, None).await, Code::Unimplemented);

    // Every REST route: its scope is that of the RPC it implements.
    for route in runwarden::rest::ROUTES {
        let path = route.path.replace("{worker_name}", "some_worker").replace("{execution_id}", "some_id");
        let service = rpcs
            .iter()
            .find(|(_, m, ..)| m == route.operation)
            .map(|(s, ..)| s.clone())
            .unwrap_or_else(|| panic!("route {} implements no RPC", route.path));
        let needed = expected_scope(&service, route.operation).expect("scope");
        for (label, token, scope) in [
            ("no token", None, None),
            ("revoked", Some(&t.revoked), None),
            ("expired", Some(&t.expired), None),
            ("read", Some(&t.read), Some(Scope::Read)),
            ("report:write", Some(&t.write), Some(Scope::ReportWrite)),
            ("admin", Some(&t.admin), Some(Scope::Admin)),
        ] {
            let method = http::Method::from_bytes(route.method.to_uppercase().as_bytes()).expect("method");
            let mut request = app.http.request(method, app.url(&path));
            if route.body.is_some() {
                request = request.header("content-type", "application/json").body("{}");
            }
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.expect("REST call");
            let status = response.status().as_u16();
            let expected = match scope {
                None => Some(401),
                Some(s) if !s.allows(needed) => Some(403),
                Some(_) => None,
            };
            let body = response.text().await.unwrap_or_default();
            match expected {
                Some(code) => {
                    assert_eq!(status, code, "{} {path} with {label}: {body}", route.method);
                    assert!(!body.contains("rwt_"), "the error never repeats a token: {body}");
                }
                None => assert!(!matches!(status, 401 | 403), "{} {path} with {label}: {status} {body}", route.method),
            }
        }
    }

    // /metrics needs read; the OpenAPI document and the dashboard do not.
    assert_eq!(app.http.get(app.url("/metrics")).send().await.expect("metrics").status(), 401);
    let metrics = app.http.get(app.url("/metrics")).bearer_auth(&t.read).send().await.expect("metrics");
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.expect("text").contains("runwarden_auth_refused_total"));
    assert_eq!(app.http.get(app.url("/api/v1/openapi.json")).send().await.expect("openapi").status(), 200);
    assert_eq!(app.http.get(app.url("/")).send().await.expect("index").status(), 200);

    // The messages say which refusal it was.
    let status = ReportServiceClient::new(app.channel.clone())
        .submit_report(SubmitReportRequest::default())
        .await
        .expect_err("no token");
    assert!(status.message().contains("requires a token"), "{}", status.message());
    let mut expired = Request::new(ListWorkersRequest::default());
    expired.metadata_mut().insert("authorization", format!("Bearer {}", t.expired).parse().expect("ascii"));
    let status = QueryServiceClient::new(app.channel.clone()).list_workers(expired).await.expect_err("expired");
    assert!(status.message().contains("expired"), "{}", status.message());
    app.stop().await;
}

fn report(worker: &str) -> ExecutionReport {
    ExecutionReport {
        worker_name: worker.into(),
        execution_id: uuid::Uuid::new_v4().to_string(),
        outcome: Outcome::Success as i32,
        duration_ms: Some(1000),
        ..Default::default()
    }
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    request
}

async fn worker_names(app: &TestApp, token: &str) -> Vec<String> {
    let page = QueryServiceClient::new(app.channel.clone())
        .list_workers(with_token(ListWorkersRequest { limit: 100, ..Default::default() }, token))
        .await
        .expect("list workers")
        .into_inner();
    page.workers.into_iter().map(|w| w.worker_name).collect()
}

async fn worker_prefix_tokens_only_report_for_their_workers(backend: Backend) {
    let clock = ManualClock::starting_now();
    let app = spawn_app_with_clock(TestDatabase::create(backend).await, |_| {}, clock).await;
    let (_, team_a) =
        app.auth.create_token("team-a", Scope::ReportWrite, Some("team_a_".into()), None).await.expect("token");
    let (_, reader) = app.auth.create_token("reader", Scope::Read, None, None).await.expect("token");
    let mut reports = ReportServiceClient::new(app.channel.clone());

    reports
        .submit_report(with_token(SubmitReportRequest { report: Some(report("team_a_export")) }, &team_a))
        .await
        .expect("its own worker");
    let status = reports
        .submit_report(with_token(SubmitReportRequest { report: Some(report("team_b_export")) }, &team_a))
        .await
        .expect_err("another team's worker");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("team_a_") && status.message().contains("team_b_export"), "{}", status.message());

    // A batch with one foreign report is refused whole: nothing of it is stored.
    let batch = SubmitReportBatchRequest { reports: vec![report("team_a_other"), report("team_b_sneaky")] };
    let status = reports.submit_report_batch(with_token(batch, &team_a)).await.expect_err("mixed batch");
    assert_eq!(status.code(), Code::PermissionDenied);

    // The REST face applies the same rule.
    let rest = app
        .http
        .post(app.url("/api/v1/orchestrator/reports"))
        .bearer_auth(&team_a)
        .json(&serde_json::json!({"worker_name": "team_b_rest", "outcome": "OUTCOME_SUCCESS", "duration_ms": 5}))
        .send()
        .await
        .expect("REST");
    assert_eq!(rest.status(), 403);

    assert_eq!(worker_names(&app, &reader).await, vec!["team_a_export".to_owned()]);
    app.stop().await;
}

async fn tokens_are_managed_over_the_admin_service(backend: Backend) {
    let clock = ManualClock::starting_now();
    let db = TestDatabase::create(backend).await;
    let url = db.url.clone();
    let app = spawn_app_with_clock(db, |_| {}, clock).await;
    let (_, admin) = app.auth.create_token("root", Scope::Admin, None, None).await.expect("token");
    let mut client = AdminServiceClient::new(app.channel.clone());

    let created = client
        .create_token(with_token(
            CreateTokenRequest {
                name: "dashboard".into(),
                scope: TokenScope::Read as i32,
                worker_prefix: String::new(),
                expires_in: "90d".into(),
            },
            &admin,
        ))
        .await
        .expect("create")
        .into_inner();
    let secret = created.secret.clone();
    let info = created.token.expect("token info");
    assert!(secret.starts_with(&format!("rwt_{}_", info.id)));
    let expires = info.expires_at.expect("expires").seconds - info.created_at.expect("created").seconds;
    assert_eq!(expires, 90 * 86_400);
    assert!(worker_names(&app, &secret).await.is_empty(), "the new token reads");

    // Bad requests name the field.
    for (request, field) in [
        (CreateTokenRequest { name: "x".into(), scope: 0, ..Default::default() }, "scope"),
        (CreateTokenRequest { name: String::new(), scope: 2, ..Default::default() }, "name"),
        (
            CreateTokenRequest { name: "y".into(), scope: 2, expires_in: "soon".into(), ..Default::default() },
            "expires_in",
        ),
        (
            CreateTokenRequest { name: "z".into(), scope: 2, worker_prefix: "a_".into(), ..Default::default() },
            "worker_prefix",
        ),
    ] {
        let status = client.create_token(with_token(request, &admin)).await.expect_err("invalid");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains(field), "{field}: {}", status.message());
    }
    let duplicate = CreateTokenRequest { name: "dashboard".into(), scope: 2, ..Default::default() };
    assert_eq!(client.create_token(with_token(duplicate, &admin)).await.expect_err("dup").code(), Code::AlreadyExists);

    // The list shows no secret and no hash.
    let list = client.list_tokens(with_token(ListTokensRequest {}, &admin)).await.expect("list").into_inner();
    assert_eq!(list.tokens.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["root", "dashboard"]);
    let shown = format!("{list:?}");
    assert!(!shown.contains(&secret[20..]), "no secret in the list");

    // Revoked through this replica: refused at once.
    client.revoke_token(with_token(RevokeTokenRequest { token: "dashboard".into() }, &admin)).await.expect("revoke");
    let status = QueryServiceClient::new(app.channel.clone())
        .list_workers(with_token(ListWorkersRequest::default(), &secret))
        .await
        .expect_err("revoked");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("revoked"), "{}", status.message());
    let missing = client.revoke_token(with_token(RevokeTokenRequest { token: "nope".into() }, &admin)).await;
    assert_eq!(missing.expect_err("unknown").code(), Code::NotFound);

    // Revoked elsewhere (another replica, or `runwarden token revoke` on the database): refused
    // once this replica's cache refreshes, within seconds.
    let (_, other) = app.auth.create_token("short-lived", Scope::Read, None, None).await.expect("token");
    assert!(worker_names(&app, &other).await.is_empty());
    let store = runwarden::store::Store::connect(&url, &Default::default()).await.expect("store");
    let txn = store.begin_write().await.expect("txn");
    runwarden::store::tokens::revoke(&txn, "short-lived", chrono::Utc::now()).await.expect("revoke").expect("found");
    txn.commit().await.expect("commit");
    store.close().await;
    let mut refused = false;
    for _ in 0..100 {
        let result = QueryServiceClient::new(app.channel.clone())
            .list_workers(with_token(ListWorkersRequest::default(), &other))
            .await;
        if result.is_err_and(|s| s.code() == Code::Unauthenticated) {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "a token revoked in the database is refused within {:?}", runwarden::auth::REFRESH * 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_rate_limit_is_told_when_to_retry() {
    let clock = ManualClock::starting_now();
    let app = spawn_app_with_clock(
        TestDatabase::create(Backend::Sqlite).await,
        |config| {
            config.auth.rate_per_second = 2.0;
            config.auth.burst = 3.0;
        },
        clock,
    )
    .await;
    let (_, token) = app.auth.create_token("chatty", Scope::Read, None, None).await.expect("token");
    let mut query = QueryServiceClient::new(app.channel.clone());
    for _ in 0..3 {
        query.list_workers(with_token(ListWorkersRequest::default(), &token)).await.expect("within the burst");
    }
    let status = query.list_workers(with_token(ListWorkersRequest::default(), &token)).await.expect_err("over");
    assert_eq!(status.code(), Code::ResourceExhausted);
    let retry = status.get_details_retry_info().and_then(|r| r.retry_delay).expect("RetryInfo");
    assert!(retry > Duration::ZERO && retry <= Duration::from_secs(1), "{retry:?}");
    let rest = app.http.get(app.url("/api/v1/orchestrator/workers")).bearer_auth(&token).send().await.expect("REST");
    assert_eq!(rest.status(), 429);
    assert!(rest.headers().contains_key("retry-after"));

    // Another token has its own bucket; after the advised wait the first one works again.
    let (_, other) = app.auth.create_token("quiet", Scope::Read, None, None).await.expect("token");
    query.list_workers(with_token(ListWorkersRequest::default(), &other)).await.expect("own bucket");
    tokio::time::sleep(retry + Duration::from_millis(50)).await;
    query.list_workers(with_token(ListWorkersRequest::default(), &token)).await.expect("the next window");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_beyond_loopback_needs_auth_or_insecure() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let mut config = Config::new("0.0.0.0:0".parse().expect("addr"), db.url.clone());
    config.background_tasks = false;
    let error = runwarden::App::build(config.clone()).await.err().expect("refused");
    assert!(error.to_string().contains("--insecure"), "{error}");

    for allow in [|c: &mut Config| c.insecure = true, |c: &mut Config| c.auth.require = true] {
        let mut allowed = config.clone();
        allow(&mut allowed);
        let app = runwarden::App::build(allowed).await.expect("starts");
        drop(app);
    }
    // Once a token exists, auth is on and the address is fine.
    let app = crate::helpers::spawn_app_with(TestDatabase::borrowed(&db.url), |_| {}).await;
    app.auth.create_token("first", Scope::Admin, None, None).await.expect("token");
    app.stop().await;
    let app = runwarden::App::build(config).await.expect("starts with a token in the database");
    drop(app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_auth_refuses_calls_before_any_token_exists() {
    let clock = ManualClock::starting_now();
    let app = spawn_app_with_clock(TestDatabase::create(Backend::Sqlite).await, |c| c.auth.require = true, clock).await;
    let status = ReportServiceClient::new(app.channel.clone())
        .submit_report(SubmitReportRequest { report: Some(report("w")) })
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    app.stop().await;
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let dir = tempfile::tempdir().expect("dir");
        let ca_key = KeyPair::generate().expect("key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "runwarden test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        for (name, subjects) in
            [("server", vec!["localhost".to_owned(), "127.0.0.1".to_owned()]), ("client", vec!["worker".to_owned()])]
        {
            let key = KeyPair::generate().expect("key");
            let cert = CertificateParams::new(subjects).expect("params").signed_by(&key, &issuer).expect("sign");
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).expect("write");
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).expect("write");
        }
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write");
        Pki { ca_pem: ca.pem(), dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn files(&self, mutual: bool) -> runwarden::transport::TlsFiles {
        runwarden::transport::TlsFiles {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: mutual.then(|| self.path("ca.pem")),
        }
    }

    fn options(&self, identity: bool) -> runwarden::client::ClientOptions {
        runwarden::client::ClientOptions {
            ca_cert: Some(self.path("ca.pem")),
            identity: identity.then(|| (self.path("client.pem"), self.path("client.key"))),
            ..Default::default()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls_round_trips() {
    let pki = Pki::new();
    let db = TestDatabase::create(Backend::Sqlite).await;
    let app = crate::helpers::spawn_app_with(db, |c| c.tls = Some(pki.files(false))).await;
    let addr = format!("https://localhost:{}", app.addr.port());

    // gRPC over TLS (HTTP/2 by ALPN).
    let mut client = runwarden::client::Client::connect_with(&addr, &pki.options(false)).await.expect("connect");
    client.submit(report("over_tls")).await.expect("submit over TLS");
    // REST and grpc-web over TLS (HTTP/1.1).
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).expect("ca"))
        .http1_only()
        .build()
        .expect("client");
    let workers = http.get(format!("{addr}/api/v1/orchestrator/workers")).send().await.expect("REST over TLS");
    assert_eq!(workers.status(), 200);
    assert!(workers.text().await.expect("body").contains("over_tls"));
    // Plain text to a TLS port gets nowhere.
    assert!(reqwest::get(format!("http://127.0.0.1:{}/metrics", app.addr.port())).await.is_err());
    app.stop().await;

    let db = TestDatabase::create(Backend::Sqlite).await;
    let app = crate::helpers::spawn_app_with(db, |c| c.tls = Some(pki.files(true))).await;
    let addr = format!("https://localhost:{}", app.addr.port());
    let without = match runwarden::client::Client::connect_with(&addr, &pki.options(false)).await {
        Ok(mut client) => client.submit(report("anonymous")).await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(without.is_err(), "mutual TLS refuses a client without a certificate");
    let mut client = runwarden::client::Client::connect_with(&addr, &pki.options(true)).await.expect("connect");
    client.submit(report("with_client_cert")).await.expect("submit with a client certificate");
    app.stop().await;
}

/// Reads until the server closes the connection or answers; `None` if it does neither in 20 s.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read).await.ok()?;
    Some(String::from_utf8_lossy(&seen).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_oversized_request_heads_are_cut_off() {
    let app = crate::helpers::spawn_app_with(TestDatabase::create(Backend::Sqlite).await, |c| {
        c.limits.header_read_timeout = Duration::from_millis(500);
        c.limits.max_header_bytes = 16 * 1024;
    })
    .await;
    // Slow loris: a request head that never completes is dropped.
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").await.expect("write");
    let answer = read_until_closed(&mut slow).await.expect("the server closes a slow request head");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");

    // An oversized head is refused, and the server keeps serving.
    let mut big = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    let head = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
    let _ = big.write_all(head.as_bytes()).await;
    let answer = read_until_closed(&mut big).await.expect("the server closes an oversized head");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(app.http.get(app.url("/metrics")).send().await.expect("metrics").status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_longer_than_the_request_timeout_is_cut_off() {
    let app = crate::helpers::spawn_app_with(TestDatabase::create(Backend::Sqlite).await, |c| {
        c.limits.request_timeout = Duration::from_millis(500);
    })
    .await;
    // A client stream that never ends.
    let never = futures::stream::pending::<SubmitReportRequest>();
    let status = app.report.clone().submit_reports(Request::new(never)).await.expect_err("cut off");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    app.stop().await;
}

/// The real binary's log, with every kind of token used and refused, holds no token and no hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_hash_reaches_the_logs() {
    use std::process::Command;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let bin = env!("CARGO_BIN_EXE_runwarden");
    let create = |name: &str, scope: &str| {
        let out = Command::new(bin)
            .args(["token", "create", "--name", name, "--scope", scope, "--database", &db.url])
            .env("RUST_LOG", "debug")
            .output()
            .expect("token create");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).expect("utf-8");
        let stderr = String::from_utf8(out.stderr).expect("utf-8");
        let token = stdout.trim().lines().last().expect("the token").to_owned();
        assert!(!stderr.contains(&token), "the token is printed once, on stdout");
        (token, stderr)
    };
    let (admin, _) = create("ops", "admin");
    let (reader, _) = create("grafana", "read");
    let revoke =
        Command::new(bin).args(["token", "revoke", "grafana", "--database", &db.url]).output().expect("token revoke");
    assert!(revoke.status.success());
    let list = Command::new(bin).args(["token", "list", "--database", &db.url]).output().expect("token list");
    let listed = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(listed.contains("ops") && listed.contains("revoked"), "{listed}");

    let mut server = crate::helpers::LoggedServer::start(&db.url, "trace,h2=info,hyper=info,sqlx=debug").await;
    let addr = server.addr.clone();
    let http = reqwest::Client::new();
    for token in
        [admin.as_str(), reader.as_str(), "rwt_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "junk"]
    {
        let _ = http.get(format!("http://{addr}/api/v1/orchestrator/workers")).bearer_auth(token).send().await;
        let _ = http.get(format!("http://{addr}/metrics")).bearer_auth(token).send().await;
        let channel = Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
        let _ = ReportServiceClient::new(channel)
            .submit_report(with_token(SubmitReportRequest { report: Some(report("logged")) }, token))
            .await;
    }
    server.stop();
    let text = server.text();
    assert!(text.contains("call refused"), "refusals are logged");
    // The secret is everything after the id: base64url, so it may itself hold '_'.
    let secret_of = |token: &str| runwarden::domain::access::parse_token(token).expect("one of ours").secret.to_owned();
    let mut secrets: BTreeMap<&str, String> = BTreeMap::new();
    for token in [&admin, &reader] {
        secrets.insert(token, runwarden::domain::access::sha256_hex(&secret_of(token)));
    }
    for (token, hash) in &secrets {
        let secret = secret_of(token);
        assert_eq!(secret.len(), 43, "the whole secret");
        assert!(!text.contains(&secret), "a token's secret is in the log");
        assert!(!text.contains(hash.as_str()), "a token's hash is in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_gets_at_most_its_concurrent_streams() {
    let app = crate::helpers::spawn_app_with(TestDatabase::create(Backend::Sqlite).await, |c| {
        c.limits.max_concurrent_streams = 2;
    })
    .await;
    let watch = || {
        let mut query = QueryServiceClient::new(app.channel.clone());
        async move {
            query
                .watch_executions(runwarden::proto::v1::WatchExecutionsRequest::default())
                .await
                .map(|r| r.into_inner())
        }
    };
    let first = watch().await.expect("first watch");
    let second = watch().await.expect("second watch");
    // The third stream on the same connection waits for a free slot...
    let third = tokio::spawn(watch());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third.is_finished(), "a third concurrent stream was admitted");
    // ...which closing one frees.
    drop(first);
    let third = tokio::time::timeout(Duration::from_secs(20), third).await.expect("admitted once a slot frees");
    let third = third.expect("task").expect("third watch");
    drop((second, third));
    app.stop().await;
}
