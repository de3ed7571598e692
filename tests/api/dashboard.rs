//! The web dashboard as the server serves it (the page and its hashed assets, cache headers,
//! gzip), and `runwarden demo` filling a database that the query API then shows.

use chrono::Utc;
use runwarden::{
    demo,
    error::Error,
    proto::v1::{
        AnomalyKind, GetGuardianStatusRequest, ListAnomaliesRequest, ListWorkersRequest, WorkerHealth,
        guardian_service_client::GuardianServiceClient,
    },
    store::{Store, StoreOptions},
};

use crate::{
    backend_tests,
    helpers::{Backend, TestDatabase, spawn_app, spawn_app_with},
};

backend_tests!(demo_fills_an_empty_database_and_refuses_a_second_time);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_assets_are_served_with_cache_headers() {
    let app = spawn_app(Backend::Sqlite).await;
    let page = app.http.get(app.url("/")).send().await.expect("GET /");
    assert_eq!(page.status(), 200);
    let header = |r: &reqwest::Response, name: &str| {
        r.headers().get(name).map(|v| v.to_str().expect("ascii header").to_owned()).unwrap_or_default()
    };
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&page, "cache-control"), "no-cache");
    let html = page.text().await.expect("body");
    assert!(html.starts_with("<!doctype html>"), "{html}");

    // The page names its script and stylesheet by content hash; both are served, immutable.
    let assets: Vec<&str> = html
        .split('"')
        .filter(|s| s.starts_with("/assets/app-") && (s.ends_with(".js") || s.ends_with(".css")))
        .collect();
    assert_eq!(assets.len(), 2, "one script and one stylesheet in {html}");
    for asset in assets {
        let plain = app.http.get(app.url(asset)).send().await.expect("GET asset");
        assert_eq!(plain.status(), 200, "{asset}");
        let expected =
            if asset.ends_with(".js") { "text/javascript; charset=utf-8" } else { "text/css; charset=utf-8" };
        assert_eq!(header(&plain, "content-type"), expected);
        assert_eq!(header(&plain, "cache-control"), "public, max-age=31536000, immutable");
        assert!(header(&plain, "content-encoding").is_empty());
        let plain_len = plain.bytes().await.expect("asset body").len();
        assert!(plain_len > 1000, "{asset}: {plain_len} bytes");

        let zipped = app.http.get(app.url(asset)).header("accept-encoding", "gzip, br").send().await.expect("GET gz");
        assert_eq!(header(&zipped, "content-encoding"), "gzip");
        assert_eq!(header(&zipped, "content-type"), expected);
        let body = zipped.bytes().await.expect("gz body");
        assert_eq!(&body[..2], &[0x1f, 0x8b], "{asset} is gzip");
        assert!(body.len() < plain_len);
        // The gzip copies are variants, not files of their own.
        let direct = app.http.get(app.url(&format!("{asset}.gz"))).send().await.expect("GET .gz");
        assert_eq!(direct.status(), 404);
    }

    for missing in ["/assets/nope-12345678.js", "/assets/index.html"] {
        let r = app.http.get(app.url(missing)).send().await.expect("GET missing");
        assert_eq!(r.status(), 404, "{missing}");
    }
    // The REST shim's own 404 still answers everything else.
    let r = app.http.get(app.url("/nothing/here")).send().await.expect("GET unknown");
    assert_eq!(r.status(), 404);
}

async fn demo_fills_an_empty_database_and_refuses_a_second_time(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let store = Store::connect(&db.url, &StoreOptions::default()).await.expect("connect");
    store.migrate().await.expect("migrate");
    let summary = demo::run(&store, 14, Utc::now()).await.expect("demo");
    assert_eq!(summary.workers, 5);
    assert!(summary.executions > 14 * 24 * 2, "{summary:?}");
    assert!(summary.streams >= 25, "{summary:?}");
    assert!(summary.missed_runs >= 2, "{summary:?}");
    let again = demo::run(&store, 7, Utc::now()).await;
    assert!(matches!(again, Err(Error::AlreadyExists(_))), "{again:?}");
    store.close().await;

    let app = spawn_app_with(db, |_| {}).await;
    let workers = app
        .query
        .clone()
        .list_workers(ListWorkersRequest { limit: 100, ..Default::default() })
        .await
        .expect("list workers")
        .into_inner()
        .workers;
    for (name, worker_type, _) in demo::WORKERS {
        let worker = workers.iter().find(|w| w.worker_name == name).unwrap_or_else(|| panic!("{name} listed"));
        assert_eq!(worker.worker_type, worker_type);
        assert!(worker.schedule.as_ref().is_some_and(|s| !s.inferred), "{name} has a declared schedule");
        assert!(worker.run_count > 0);
    }
    let silent = workers.iter().find(|w| w.worker_name == "coach_cleanup_worker").expect("silent worker");
    assert!(
        matches!(silent.health(), WorkerHealth::Late | WorkerHealth::Down),
        "the silent worker is LATE or DOWN, not {:?}",
        silent.health()
    );
    assert!(
        workers
            .iter()
            .filter(|w| w.worker_name != "coach_cleanup_worker")
            .all(|w| !matches!(w.health(), WorkerHealth::Late | WorkerHealth::Down)),
        "only the silent worker is late"
    );

    let open = app
        .query
        .clone()
        .list_anomalies(ListAnomaliesRequest { open_only: true, limit: 1000, ..Default::default() })
        .await
        .expect("list anomalies")
        .into_inner()
        .anomalies;
    for kind in
        [AnomalyKind::DurationSpike, AnomalyKind::MissedRun, AnomalyKind::RateLimited, AnomalyKind::SilentSuccess]
    {
        assert!(open.iter().any(|a| a.kind() == kind), "an open {kind:?} anomaly in {open:?}");
    }
    let status = GuardianServiceClient::new(app.channel.clone())
        .get_guardian_status(GetGuardianStatusRequest {})
        .await
        .expect("guardian status")
        .into_inner();
    assert!(status.at.is_some(), "the demo ran one guardian tick");
    assert!(status.active_streams >= 25);
    assert!(status.orphaned_streams > 0 && status.healthy_streams > 0);
    app.stop().await;
}
