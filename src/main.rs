//! The `mqtt-tokend` binary: parse the command line, set up logging, run, map errors to an
//! exit code.

use anyhow::Context;
use clap::Parser;
use mqtt_tokend::{
    app::Server,
    cli,
    config::{Cli, Command},
    kicker,
};
use tracing_subscriber::EnvFilter;

fn init_tracing(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr (stdout is for command output), coloured only on a terminal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

/// Waits for SIGTERM or SIGINT; on each SIGHUP reloads the TLS certificates meanwhile.
async fn wait_for_signal(server: &Server) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => return r.context("waiting for SIGINT"),
            _ = term.recv() => return Ok(()),
            // A failed reload is logged and keeps the old certificates: keep serving.
            _ = hup.recv() => { let _ = server.reload_tls(); }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(config) => {
            init_tracing(&config.log);
            let server = Server::start(*config)
                .await
                .context("starting mqtt-tokend")?;
            wait_for_signal(&server).await?;
            tracing::info!("shutting down");
            server.shutdown().await.context("shutting down")?;
            tracing::info!("stopped");
        }
        Command::AccessKey(command) => {
            init_tracing("warn");
            cli::access_key(command).await?;
        }
        Command::Keyring(command) => {
            init_tracing("warn");
            cli::keyring(command)?;
        }
        Command::Kicker(args) => {
            init_tracing(&args.log);
            kicker::run(*args, kicker::terminated())
                .await
                .context("kicker")?;
        }
    }
    Ok(())
}
