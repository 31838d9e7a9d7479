//! The `mqtt-tokend` binary: parse the command line, set up logging, run, and report a failure
//! as one line on stderr (no backtrace: a failure here is the user's to fix) with exit code 1.

use std::process::ExitCode;

use anyhow::anyhow;
use clap::Parser;
use mqtt_tokend::{
    app::Server,
    cli::{self, errors},
    config::{Cli, Command},
    kicker,
};
use tokio::signal::unix::{signal, Signal, SignalKind};
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

/// SIGINT and SIGTERM (stop) and SIGHUP (reload the TLS certificates), caught from the moment
/// they are installed.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        let install = |kind: SignalKind| {
            signal(kind).map_err(|e| anyhow!("installing the signal handlers: {e}"))
        };
        Ok(Self {
            interrupt: install(SignalKind::interrupt())?,
            terminate: install(SignalKind::terminate())?,
            hangup: install(SignalKind::hangup())?,
        })
    }

    /// Waits for SIGINT or SIGTERM, reloading the certificates on each SIGHUP meanwhile.
    async fn wait(mut self, server: &Server) {
        loop {
            tokio::select! {
                _ = self.interrupt.recv() => return,
                _ = self.terminate.recv() => return,
                // A failed reload is logged and keeps the old certificates: keep serving.
                _ = self.hangup.recv() => { let _ = server.reload_tls(); }
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

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(config) => {
            init_tracing(&config.log);
            // Before the server starts: a signal sent as soon as "serving" is logged must
            // shut it down gracefully, not kill it with the default action.
            let signals = Signals::install()?;
            let server = Server::start(*config).await?;
            signals.wait(&server).await;
            tracing::info!("shutting down");
            server.shutdown().await?;
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
        Command::Token(command) => {
            init_tracing("warn");
            cli::token(command).await?;
        }
        Command::Kicker(args) => {
            init_tracing(&args.log);
            kicker::run(*args, kicker::terminated()).await?;
        }
    }
    Ok(())
}

/// mimalloc instead of glibc's malloc: per-thread free lists suit many small, short-lived
/// allocations made on one worker and freed on another (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    private_umask();
    let command = Cli::parse().command;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{}", errors::report(&format!("starting the runtime: {e}")));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", errors::report(&e));
            ExitCode::FAILURE
        }
    }
}
