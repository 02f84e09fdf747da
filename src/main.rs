//! The `tokend` binary: parse the command line, load the configuration, run
//! the command. `anyhow` lives here only; the library has typed errors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use tokend::config::Config;

/// tokend — a thread-per-core OAuth 2.0 token service.
///
/// Issues, validates, refreshes and revokes JWT access tokens for users kept
/// in PostgreSQL, with revocation and refresh state in Redis.
///
/// Configuration comes from a TOML file (--config or TOKEND_CONFIG); every key
/// `section.key` can be overridden by the environment variable
/// `TOKEND_SECTION_KEY`, e.g. TOKEND_DATABASE_URL, TOKEND_REDIS_URL,
/// TOKEND_SERVER_LISTEN, TOKEND_KEYS_KEK. Run `tokend config check` to see the
/// effective configuration.
#[derive(Parser, Debug)]
#[command(name = "tokend", version, about, long_about, propagate_version = true)]
struct Cli {
    /// Path of the TOML configuration file. Without it, defaults and
    /// TOKEND_* environment variables are used.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "TOKEND_CONFIG",
        value_name = "PATH"
    )]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HTTP service: one pinned event loop per configured core.
    ///
    /// Checks PostgreSQL and Redis, binds every core's listener, then serves
    /// until SIGTERM or SIGINT, on which it stops accepting, finishes the
    /// requests in flight and exits 0 within server.shutdown_timeout.
    Serve,
    /// Apply the database migrations (each once, in order; safe to run twice
    /// and from two nodes at once).
    Migrate,
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate the configuration and print the effective values, secrets
    /// redacted. Exits non-zero, naming the key, when it is invalid.
    Check(CheckArgs),
}

#[derive(Args, Debug)]
struct CheckArgs {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokend: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    Ok(Config::load(cli.config.as_deref(), std::env::vars())?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = load_config(&cli)?;
    match cli.command {
        Command::Config(ConfigCommand::Check(_)) => {
            print!("{}", config.redacted_toml());
            Ok(())
        }
        Command::Migrate => {
            init_logging(&config);
            let mut client = tokend::store::pg::connect(&config.database)?;
            let applied = tokend::store::migrate::run(&mut client)?;
            if applied.is_empty() {
                println!("database is up to date");
            } else {
                for name in applied {
                    println!("applied {name}");
                }
            }
            Ok(())
        }
        Command::Serve => serve(config),
    }
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(&config.server.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if config.server.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.with_ansi(false).try_init()
    };
}

fn serve(config: Config) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    init_logging(&config);
    tracing::info!(
        "effective configuration (secrets redacted):\n{}",
        config.redacted_toml()
    );
    let driver = config.server.driver;
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("cannot install signal handlers")?;
    let server = tokend::cores::Server::start(config)?;
    let cores = server.shared().counters.len();
    tracing::info!(driver = ?driver, cores, "tokend listening on http://{}", server.addr);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    loop {
        for signal in signals.pending() {
            match signal {
                SIGTERM | SIGINT => {
                    tracing::info!("shutting down: finishing requests in flight");
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
                    server.shutdown();
                    tracing::info!("stopped");
                    return Ok(());
                }
                SIGHUP => tracing::info!("SIGHUP: nothing to reload yet"),
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
