//! The `runwarden` binary: parse the command line, set up logging, hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use runwarden::{
    App, Config,
    config::{Cli, Command, RollupCommand, resolve_store},
    store::Store,
    telemetry,
};

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
    let check = async {
        let channel = tonic::transport::Endpoint::from_shared(uri.clone())
            .map_err(|e| format!("invalid address {}: {e}", args.addr))?
            .connect_timeout(timeout)
            .connect()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", args.addr))?;
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
