//! The `runwarden` binary: parse the command line, set up logging, hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use runwarden::{
    App, Config,
    config::{Cli, Command, RollupCommand, TokenCommand, resolve_store},
    store::Store,
    telemetry,
};

/// mimalloc: cross-thread frees (request threads allocate reports, the writer frees them) do not
/// contend on one arena lock as they do with glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        Command::Exec(args) => {
            // The command's own output owns stdout and stderr: no log lines in between.
            let code = runwarden::exec::run(args).await;
            return ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1));
        }
        command => command,
    };
    telemetry::init_logging(cli.log_format);
    let result = match command {
        Command::Serve(args) => serve(&args).await,
        Command::Migrate(args) => migrate(&args).await,
        Command::Health(args) => health(&args).await,
        Command::Backup(args) => backup(&args).await,
        Command::Rollup(RollupCommand::Rebuild(args)) => rebuild_rollups(&args).await,
        Command::Token(TokenCommand::Create(args)) => token_create(&args).await,
        Command::Token(TokenCommand::List(args)) => token_list(&args).await,
        Command::Token(TokenCommand::Revoke(args)) => token_revoke(&args).await,
        Command::Demo(args) => demo(&args).await,
        Command::Exec(_) => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("runwarden: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: &runwarden::config::ServeArgs) -> Result<(), String> {
    let config = Config::resolve(args)?;
    let app = App::build(config).await.map_err(|e| e.to_string())?;
    app.run_until_stopped(shutdown_signal()).await.map_err(|e| e.to_string())
}

async fn migrate(args: &runwarden::config::DatabaseArgs) -> Result<(), String> {
    let (url, options) = resolve_store(args)?;
    let store = Store::connect(&url, &options).await.map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    tracing::info!("migrations applied");
    store.close().await;
    Ok(())
}

async fn backup(args: &runwarden::config::BackupArgs) -> Result<(), String> {
    let (url, options) = resolve_store(&args.database)?;
    let store = Store::connect(&url, &options).await.map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let result = store.backup_to(&args.to).await.map_err(|e| e.to_string());
    store.close().await;
    result?;
    let bytes = std::fs::metadata(&args.to).map(|m| m.len()).unwrap_or(0);
    println!("backed up to {} ({bytes} bytes) in {:.1}s", args.to.display(), started.elapsed().as_secs_f64());
    Ok(())
}

async fn demo(args: &runwarden::config::DemoArgs) -> Result<(), String> {
    let (url, options) = resolve_store(&args.database)?;
    let store = Store::connect(&url, &options).await.map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let result = runwarden::demo::run(&store, args.days, chrono::Utc::now()).await.map_err(|e| e.to_string());
    store.close().await;
    let summary = result?;
    println!(
        "demo: {} workers, {} executions over {} days, {} streams, {} missed runs recorded ({:.1}s) in {}",
        summary.workers,
        summary.executions,
        args.days,
        summary.streams,
        summary.missed_runs,
        started.elapsed().as_secs_f64(),
        runwarden::server::redact(&url)
    );
    println!(
        "next: runwarden serve --database '{}', then open http://127.0.0.1:50051/",
        runwarden::server::redact(&url)
    );
    Ok(())
}

async fn rebuild_rollups(args: &runwarden::config::DatabaseArgs) -> Result<(), String> {
    let (url, options) = resolve_store(args)?;
    let store = Store::connect(&url, &options).await.map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let read = runwarden::store::rollups::rebuild(&store).await.map_err(|e| e.to_string())?;
    println!("rebuilt rollups from {read} executions in {:.1}s", started.elapsed().as_secs_f64());
    store.close().await;
    Ok(())
}

async fn health(args: &runwarden::config::HealthArgs) -> Result<(), String> {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let timeout = std::time::Duration::from_secs(args.timeout);
    let uri = if args.addr.contains("://") { args.addr.clone() } else { format!("http://{}", args.addr) };
    let options = runwarden::client::ClientOptions { timeout, ca_cert: args.ca_cert.clone(), ..Default::default() };
    let check = async {
        let channel =
            runwarden::client::channel(&uri, &options).await.map_err(|e| format!("cannot reach {}: {e}", args.addr))?;
        HealthClient::new(channel)
            .check(HealthCheckRequest { service: args.service.clone() })
            .await
            .map_err(|e| format!("health check failed: {}", e.message()))
    };
    let response = tokio::time::timeout(timeout, check)
        .await
        .map_err(|_| format!("no answer from {} within {}s", args.addr, args.timeout))??;
    let status = ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown);
    println!("{}", status.as_str_name());
    if status == ServingStatus::Serving { Ok(()) } else { Err(format!("{} is {}", args.addr, status.as_str_name())) }
}

/// Opens (and migrates: creating the first token may come before the first start) the database.
async fn open_for_tokens(args: &runwarden::config::DatabaseArgs) -> Result<Store, String> {
    let (url, options) = resolve_store(args)?;
    let store = Store::connect(&url, &options).await.map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    Ok(store)
}

async fn token_create(args: &runwarden::config::TokenCreateArgs) -> Result<(), String> {
    use runwarden::{auth::new_token_row, domain::access, store::tokens};
    let scope: access::Scope = args.scope.parse()?;
    let lifetime =
        args.expires.as_deref().map(access::parse_lifetime).transpose().map_err(|e| format!("--expires: {e}"))?;
    let (row, token) = new_token_row(&args.name, scope, args.worker_prefix.clone(), lifetime, chrono::Utc::now())
        .map_err(|e| e.to_string())?;
    let store = open_for_tokens(&args.database).await?;
    let result = async {
        let txn = store.begin_write().await.map_err(|e| e.to_string())?;
        let row = tokens::insert(&txn, row).await.map_err(|e| e.to_string())?;
        txn.commit().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(row)
    }
    .await;
    store.close().await;
    let row = result?;
    let expires = row.expires_at_us.map_or("never".to_owned(), |us| runwarden::store::from_micros(us).to_rfc3339());
    eprintln!(
        "created token {:?} (id {}, scope {}{}, expires {expires}); it is shown once, below:",
        row.name,
        row.id,
        row.scope,
        row.worker_prefix.as_deref().map(|p| format!(", workers {p}*")).unwrap_or_default()
    );
    println!("{token}");
    Ok(())
}

async fn token_list(args: &runwarden::config::DatabaseArgs) -> Result<(), String> {
    use runwarden::store::{from_micros, tokens};
    let store = open_for_tokens(args).await?;
    let rows = tokens::all(store.reader()).await.map_err(|e| e.to_string());
    store.close().await;
    let now = chrono::Utc::now();
    println!(
        "{:<16}  {:<24}  {:<12}  {:<16}  {:<20}  {:<20}  STATUS",
        "ID", "NAME", "SCOPE", "WORKER PREFIX", "CREATED", "EXPIRES"
    );
    for row in rows? {
        let time = |us: i64| from_micros(us).format("%Y-%m-%d %H:%M UTC").to_string();
        let status = match (row.revoked_at_us, row.expires_at_us) {
            (Some(at), _) => format!("revoked {}", time(at)),
            (None, Some(at)) if from_micros(at) <= now => "expired".to_owned(),
            _ => "active".to_owned(),
        };
        println!(
            "{:<16}  {:<24}  {:<12}  {:<16}  {:<20}  {:<20}  {status}",
            row.id,
            row.name,
            row.scope,
            row.worker_prefix.as_deref().unwrap_or("-"),
            time(row.created_at_us),
            row.expires_at_us.map_or("never".to_owned(), time),
        );
    }
    Ok(())
}

async fn token_revoke(args: &runwarden::config::TokenRevokeArgs) -> Result<(), String> {
    let store = open_for_tokens(&args.database).await?;
    let result = async {
        let txn = store.begin_write().await.map_err(|e| e.to_string())?;
        let row = runwarden::store::tokens::revoke(&txn, &args.token, chrono::Utc::now())
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no token with id or name {:?}", args.token))?;
        txn.commit().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(row)
    }
    .await;
    store.close().await;
    let row = result?;
    println!("revoked token {:?} (id {}); running servers refuse it within 5 seconds", row.name, row.id);
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
