//! The `mqtt-tokend` binary: parse the command line, set up logging, run, map errors to an
//! exit code.

use anyhow::Context;
use clap::Parser;
use mqtt_tokend::{
    app::Server,
    cli,
    config::{Cli, Command},
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

/// The signals `serve` handles, installed before the server starts: a SIGTERM that arrives
/// right after the "serving" line must shut down cleanly, not kill the process.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// Waits for SIGTERM or SIGINT; on each SIGHUP reloads the TLS certificates meanwhile.
    async fn wait(mut self, server: &Server) {
        loop {
            tokio::select! {
                _ = self.int.recv() => return,
                _ = self.term.recv() => return,
                // A failed reload is logged and keeps the old certificates: keep serving.
                _ = self.hup.recv() => { let _ = server.reload_tls(); }
            }
        }
    }
}

/// Makes every file this process creates private (0600 files, 0700 directories), so the
/// database files sled creates (snapshots, blobs) are never readable by others. Set here, not
/// in the library: a process that embeds the server (tests, benchmarks) keeps its own umask.
fn private_umask() {
    // SAFETY: umask only sets the process's file mode mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    private_umask();
    match Cli::parse().command {
        Command::Serve(config) => {
            init_tracing(&config.log);
            let signals = Signals::install()?;
            let server = Server::start(*config)
                .await
                .context("starting mqtt-tokend")?;
            signals.wait(&server).await;
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
    }
    Ok(())
}
