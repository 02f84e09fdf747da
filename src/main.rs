//! The `tokend` binary: parse the command line, load the configuration, run
//! the command. `anyhow` lives here only; the library has typed errors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use tokend::config::Config;

/// jemalloc, not glibc malloc (issue #4: resident memory). Measured on one
/// core after the benchmark's runs (logins included, 2 blocking threads):
/// glibc kept 124 to 186 MiB, mostly blocking-thread arenas of ~57 MiB each
/// holding argon2id's 19 MiB working memory (glibc's dynamic mmap threshold
/// moves such blocks into the arenas, which never shrink), and what 10,000
/// closed connections had used stayed resident too. jemalloc with
/// [`MALLOC_CONF`] is back to ~10 MiB a second after the logins, and after
/// the connections close. Same session, CPU 0, interleaved runs: validate
/// throughput the same within noise (wrk -c64, mean of 4: 82.8k req/s with
/// glibc, 85.8k with jemalloc; callgrind: malloc and free cost ~210
/// instructions per validation with glibc, ~75 with jemalloc), single-thread
/// logins 62/s against glibc's 56/s.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main` (the `_RJEM_MALLOC_CONF`
/// environment variable may add to them at run time):
/// - `oversize_threshold:0`: no separate, eagerly purged arena for blocks of
///   8 MiB and more. With it every login faulted argon2id's 19 MiB in afresh:
///   31 logins/s on one thread instead of 56.
/// - `background_thread:true,max_background_threads:1`: one jemalloc thread
///   returns free pages on schedule even when the thread that freed them
///   has gone idle (a blocking thread after a login burst, a core after its
///   connections closed); without it purging waits for that thread's next
///   allocations.
/// - `dirty_decay_ms:1000`: free pages stay for reuse about a second (a
///   login burst keeps argon2id's memory warm), then go back to the kernel.
/// - `muzzy_decay_ms:0`: go back with `MADV_DONTNEED`, not `MADV_FREE`, whose
///   pages still count in RSS until the kernel needs them.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf = MallocConf(
    c"oversize_threshold:0,background_thread:true,max_background_threads:1,dirty_decay_ms:1000,muzzy_decay_ms:0"
        .as_ptr(),
);

/// jemalloc reads `_rjem_malloc_conf` as a `const char *`.
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);
// SAFETY: the pointer is to a 'static C string literal, never written.
unsafe impl Sync for MallocConf {}

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
    /// Manage users (stored in PostgreSQL, passwords as argon2id).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage OAuth clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage signing keys (sealed in PostgreSQL under the key-encryption key).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create a user. The password is read from standard input (one line),
    /// never from the command line, where other users could see it.
    Add {
        /// Username: 1-64 characters of A-Z a-z 0-9 . _ @ - (case-insensitively unique).
        name: String,
        /// A scope granted to the user; repeat for several. `tokend:admin`
        /// grants the admin API.
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
    },
    /// Disable a user and end every session it has (all its access and
    /// refresh tokens stop working at once).
    Disable {
        /// The username.
        name: String,
    },
    /// List users.
    List,
}

#[derive(Subcommand, Debug)]
enum ClientCommand {
    /// Register an OAuth client. A confidential client gets a 256-bit secret,
    /// printed once and stored only as its SHA-256.
    ///
    /// A browser or mobile app signing users in with the authorization code
    /// flow: --grant authorization_code with one --redirect-uri or more
    /// (and --public when it cannot keep a secret).
    Add {
        /// Client id: 1-64 characters of A-Z a-z 0-9 . _ -.
        id: String,
        /// A grant the client may use: password, refresh_token,
        /// client_credentials or authorization_code; repeat for several.
        #[arg(long = "grant", value_name = "GRANT", required = true)]
        grants: Vec<String>,
        /// A scope the client may request; repeat for several.
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Where the authorization code flow may send the user back with a
        /// code; repeat for several (at most 16). Required with --grant
        /// authorization_code, refused without it. Compared with the
        /// request's redirect_uri by exact string match. Each must be https,
        /// http on a loopback host (127.0.0.1, [::1], localhost) for a
        /// native app, or a native app's private-use scheme with a dot
        /// (com.example.app:/callback); absolute, no fragment, no user@,
        /// at most 2048 bytes.
        #[arg(long = "redirect-uri", value_name = "URI")]
        redirect_uris: Vec<String>,
        /// Where logging out (OpenID Connect RP-initiated logout) may send
        /// the user back; repeat for several (at most 16). Only with --grant
        /// authorization_code; the same rules as --redirect-uri.
        #[arg(long = "post-logout-redirect-uri", value_name = "URI")]
        post_logout_redirect_uris: Vec<String>,
        /// A public client (a browser or mobile app that cannot keep a
        /// secret): no secret; every grant but client_credentials.
        #[arg(long)]
        public: bool,
        /// Access-token lifetime for this client (e.g. 5m); default tokens.access_ttl.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        access_ttl: Option<Duration>,
        /// Refresh-token lifetime for this client (e.g. 7d); default tokens.refresh_ttl.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        refresh_ttl: Option<Duration>,
        /// Absolute lifetime of this client's refresh-token families from the
        /// login, however often rotated (e.g. 30d); default
        /// tokens.refresh_max_lifetime.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        refresh_max_lifetime: Option<Duration>,
        /// Print {"client_id": ..., "client_secret": ...} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List clients, with their redirect URIs.
    List {
        /// Print a JSON array of the clients (never their secrets, which
        /// tokend does not keep).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// List signing keys and their state (pending, active, retired).
    List,
    /// Add a new signing key: published in JWKS at once, signing after
    /// keys.publish_ahead. Running nodes pick it up within keys.reload_interval.
    Rotate,
    /// Delete keys that stopped signing longer ago than the access-token
    /// lifetime (every token they signed has expired).
    Prune,
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
            match tokend::tokens::Kek::from_config(&config.keys) {
                Ok(kek) => {
                    if let Some(kid) = tokend::tokens::keys::ensure_initial_key(
                        &mut client,
                        &kek,
                        config.keys.algorithm,
                    )? {
                        println!("created the first signing key {kid}");
                    }
                }
                Err(e) => println!("no signing key created ({e}); `tokend serve` will create it"),
            }
            if applied.is_empty() {
                println!("database is up to date");
            } else {
                for name in applied {
                    println!("applied {name}");
                }
            }
            Ok(())
        }
        Command::Serve => serve(config, cli.config.as_deref()),
        Command::User(cmd) => user_command(&config, cmd),
        Command::Client(cmd) => client_command(&config, cmd),
        Command::Keys(cmd) => keys_command(&config, cmd),
    }
}

fn user_command(config: &Config, cmd: UserCommand) -> anyhow::Result<()> {
    use tokend::identity::{passwords, users, Hasher};
    let mut db = tokend::store::pg::connect(&config.database)?;
    match cmd {
        UserCommand::Add { name, scopes } => {
            passwords::check_username(&name).map_err(|e| anyhow::anyhow!("username: {e}"))?;
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the password from standard input")?;
            let password = line.strip_suffix('\n').unwrap_or(&line);
            let password = password.strip_suffix('\r').unwrap_or(password);
            passwords::check_password(password).map_err(|e| anyhow::anyhow!("password: {e}"))?;
            let hasher = Hasher::new(&config.passwords)?;
            let phc = hasher.hash(password)?;
            let user = users::create(&mut db, &name, &phc, &scopes).map_err(|e| match e {
                users::UserError::Taken => anyhow::anyhow!("user {name} already exists"),
                e => anyhow::anyhow!(e),
            })?;
            println!("created user {} (id {})", user.username, user.id);
        }
        UserCommand::Disable { name } => {
            let now = tokend::clock::unix_now() as i64;
            let Some(user) = users::disable(&mut db, &name, now)? else {
                anyhow::bail!("no user named {name}");
            };
            let mark = user.not_before.unwrap_or(now);
            // The mark outlives every token the user may hold, whichever
            // client it was issued to.
            let clients = tokend::identity::clients::load_all(&mut db)?;
            let ttl = clients.longest_lifetimes(&config.tokens).longest();
            set_not_before_in_redis(config, &user.id, mark, ttl)?;
            println!(
                "disabled {}; its tokens are void from now on",
                user.username
            );
        }
        UserCommand::List => {
            println!("{:<36}  {:<24}  {:<8}  scopes", "id", "username", "state");
            for u in users::list(&mut db)? {
                let state = if u.disabled { "disabled" } else { "active" };
                println!(
                    "{:<36}  {:<24}  {:<8}  {}",
                    u.id,
                    u.username,
                    state,
                    u.scopes.join(" ")
                );
            }
        }
    }
    Ok(())
}

/// Mirrors a user's "not before" mark into Redis, so running nodes refuse
/// the user's older tokens at once (PostgreSQL keeps the durable copy).
fn set_not_before_in_redis(
    config: &Config,
    sub: &str,
    mark: i64,
    ttl: Duration,
) -> anyhow::Result<()> {
    use tokend::redis::{BlockingRedis, RedisTarget};
    let target = RedisTarget::from_config(&config.redis).map_err(|e| anyhow::anyhow!(e))?;
    let mut r = BlockingRedis::connect_explained(&target, Duration::from_secs(2))
        .map_err(|e| anyhow::anyhow!("cannot reach Redis ({target}): {e}"))?;
    r.query(
        redis::cmd("EVAL")
            .arg(tokend::revocation::SET_NOT_BEFORE_LUA)
            .arg(3)
            .arg(&tokend::revocation::set_not_before_keys(&config.redis.prefix, sub)[..])
            .arg(mark)
            .arg(ttl.as_secs())
            .arg(sub)
            .arg(tokend::revocation::mirror::STREAM_MAXLEN),
    )
    .map_err(|e| anyhow::anyhow!("cannot write the user's not-before mark to Redis: {e}"))?;
    let replicas = config.redis.min_replicas_acked;
    if replicas > 0 {
        let ms = config.redis.timeout.as_millis().max(1) as u64;
        let acked = r
            .query(redis::cmd("WAIT").arg(replicas).arg(ms))
            .map_err(|e| anyhow::anyhow!("WAIT for the replicas failed: {e}"))?
            .as_int()
            .unwrap_or(0);
        if acked < i64::from(replicas) {
            anyhow::bail!(
                "only {acked} of the {replicas} replicas asked for (redis.min_replicas_acked) acknowledged the user's not-before mark within redis.timeout; PostgreSQL holds it, and the nodes re-apply it after a failover"
            );
        }
    }
    Ok(())
}

/// A refusal of `client add`, named by the flags the operator typed.
fn client_add_error(e: tokend::identity::ClientError) -> anyhow::Error {
    use tokend::identity::{ClientError, UriKind};
    let flag = |kind| match kind {
        UriKind::Redirect => "--redirect-uri",
        UriKind::PostLogout => "--post-logout-redirect-uri",
    };
    match e {
        ClientError::RedirectUriRequired => anyhow::anyhow!(
            "--grant authorization_code needs at least one --redirect-uri: where the user is sent back with a code"
        ),
        ClientError::RedirectUriWithoutCodeGrant(kind) => anyhow::anyhow!(
            "{} is only for clients of the authorization code flow: add --grant authorization_code, or drop it",
            flag(kind)
        ),
        ClientError::TooManyRedirectUris(kind) => anyhow::anyhow!(
            "at most {} {} URIs per client",
            tokend::identity::redirect_uris::MAX_REDIRECT_URIS,
            flag(kind)
        ),
        ClientError::RedirectUri { kind, uri, error } => {
            anyhow::anyhow!("{} {uri:?} {error}", flag(kind))
        }
        ClientError::PublicClientGrant => anyhow::anyhow!(
            "--public with --grant client_credentials: a public client has no secret to authenticate that grant with; drop --public (a confidential client gets a secret) or the grant"
        ),
        e => anyhow::anyhow!(e),
    }
}

fn client_command(config: &Config, cmd: ClientCommand) -> anyhow::Result<()> {
    use tokend::identity::{clients, GrantType};
    let mut db = tokend::store::pg::connect(&config.database)?;
    match cmd {
        ClientCommand::Add {
            id,
            grants,
            scopes,
            redirect_uris,
            post_logout_redirect_uris,
            public,
            json,
            access_ttl,
            refresh_ttl,
            refresh_max_lifetime,
        } => {
            let grants: Vec<GrantType> = grants
                .iter()
                .map(|g| {
                    GrantType::parse(g).ok_or_else(|| {
                        anyhow::anyhow!("unknown grant {g:?}: use password, refresh_token, client_credentials or authorization_code")
                    })
                })
                .collect::<anyhow::Result<_>>()?;
            for (name, ttl) in [
                ("--access-ttl", access_ttl),
                ("--refresh-ttl", refresh_ttl),
                ("--refresh-max-lifetime", refresh_max_lifetime),
            ] {
                if ttl.is_some_and(|t| t.as_secs() == 0 || t.as_secs() > i32::MAX as u64) {
                    anyhow::bail!("{name} must be between 1s and about 68 years");
                }
            }
            let mut tx = db.transaction()?;
            let (record, secret) = clients::create_client(
                &mut tx,
                &clients::NewClient {
                    client_id: &id,
                    grants: &grants,
                    scopes: &scopes,
                    public,
                    redirect_uris: &redirect_uris,
                    post_logout_redirect_uris: &post_logout_redirect_uris,
                },
            )
            .map_err(client_add_error)?;
            let secs = |t: Option<Duration>| t.map(|t| t.as_secs() as i32);
            tx.execute(
                "UPDATE oauth_clients SET access_ttl_seconds = $2, refresh_ttl_seconds = $3, \
                 refresh_max_lifetime_seconds = $4 WHERE client_id = $1",
                &[
                    &record.client_id,
                    &secs(access_ttl),
                    &secs(refresh_ttl),
                    &secs(refresh_max_lifetime),
                ],
            )?;
            tx.commit()?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "client_id": record.client_id, "client_secret": secret })
                );
            } else {
                println!("client_id:     {}", record.client_id);
                match secret {
                    Some(s) => {
                        println!("client_secret: {s}");
                        println!("(the secret is shown only now; tokend keeps only its SHA-256)");
                    }
                    None => println!("public client: no secret"),
                }
                for uri in &record.redirect_uris {
                    println!("redirect_uri:  {uri}");
                }
                for uri in &record.post_logout_redirect_uris {
                    println!("post_logout_redirect_uri: {uri}");
                }
                println!("running nodes pick the client up within keys.reload_interval, or at once on SIGHUP");
            }
        }
        ClientCommand::List { json } => {
            let all = clients::list(&mut db)?;
            let kind = |c: &clients::ClientRecord| {
                if c.is_public() {
                    "public"
                } else {
                    "confidential"
                }
            };
            if json {
                let list: Vec<serde_json::Value> = all
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "client_id": c.client_id,
                            "type": kind(c),
                            "grant_types": c.grant_types.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
                            "scopes": c.scopes,
                            "redirect_uris": c.redirect_uris,
                            "post_logout_redirect_uris": c.post_logout_redirect_uris,
                            "access_ttl_seconds": c.access_ttl,
                            "refresh_ttl_seconds": c.refresh_ttl,
                            "refresh_max_lifetime_seconds": c.refresh_max_lifetime,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
                return Ok(());
            }
            println!(
                "{:<24}  {:<12}  {:<40}  scopes",
                "client_id", "type", "grants"
            );
            for c in &all {
                let grants: Vec<&str> = c.grant_types.iter().map(|g| g.as_str()).collect();
                println!(
                    "{:<24}  {:<12}  {:<40}  {}",
                    c.client_id,
                    kind(c),
                    grants.join(","),
                    c.scopes.join(" ")
                );
                // One line per URI under its client: they are long, and a
                // line each keeps them whole for reading and for grep.
                for uri in &c.redirect_uris {
                    println!("    redirect_uri {uri}");
                }
                for uri in &c.post_logout_redirect_uris {
                    println!("    post_logout_redirect_uri {uri}");
                }
            }
        }
    }
    Ok(())
}

fn keys_command(config: &Config, cmd: KeysCommand) -> anyhow::Result<()> {
    use tokend::tokens::{keys, Kek};
    let mut db = tokend::store::pg::connect(&config.database)?;
    match cmd {
        KeysCommand::List => {
            println!(
                "{:<44}  {:<6}  {:<8}  {:<10}  {:<10}",
                "kid", "alg", "state", "signs_from", "retired_at"
            );
            for k in keys::list(&mut db)? {
                println!(
                    "{:<44}  {:<6}  {:<8}  {:<10}  {}",
                    k.kid,
                    keys::alg_name(k.alg),
                    k.state.to_string(),
                    k.signs_from,
                    k.retired_at
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "-".into())
                );
            }
        }
        KeysCommand::Rotate => {
            let kek = Kek::from_config(&config.keys)?;
            let kid = keys::rotate(
                &mut db,
                &kek,
                config.keys.algorithm,
                config.keys.publish_ahead,
            )?;
            println!(
                "added key {kid}: published now, signing in {}",
                humantime::format_duration(config.keys.publish_ahead)
            );
        }
        KeysCommand::Prune => {
            // The same lifetime `serve`'s own pruning uses: the longest
            // access token of any client, not only the default's.
            let clients = tokend::identity::clients::load_all(&mut db)?;
            let longest = clients.longest_lifetimes(&config.tokens);
            let pruned = keys::prune(&mut db, longest.access)?;
            if pruned.is_empty() {
                println!("no key to prune");
            }
            for kid in pruned {
                println!("pruned {kid}");
            }
        }
    }
    Ok(())
}

/// Handle to change the log filter at run time (SIGHUP).
type LogHandle =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// Logs to standard error (journald), text or JSON; the level comes from
/// `RUST_LOG` when set, else `server.log_level`.
fn init_logging(config: &Config) -> Option<LogHandle> {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{fmt, reload, EnvFilter};
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(&config.server.log_level));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let result = if config.server.log_format == "json" {
        registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init()
    } else {
        registry
            .with(fmt::layer().with_ansi(false).with_writer(std::io::stderr))
            .try_init()
    };
    result.ok().map(|_| handle)
}

/// On SIGHUP: re-reads the configuration file for `server.log_level`
/// (unless `RUST_LOG` rules). Other settings need a restart.
fn reload_log_level(path: Option<&std::path::Path>, handle: Option<&LogHandle>) {
    let Some(handle) = handle else { return };
    if std::env::var_os("RUST_LOG").is_some() {
        return;
    }
    match Config::load(path, std::env::vars()) {
        Ok(c) => {
            let level = c.server.log_level.clone();
            if handle
                .modify(|f| *f = tracing_subscriber::EnvFilter::new(&level))
                .is_ok()
            {
                tracing::info!(level, "log level reloaded");
            }
        }
        Err(e) => {
            tracing::error!("SIGHUP: the configuration no longer loads, keeping the log level: {e}")
        }
    }
}

fn serve(config: Config, config_path: Option<&std::path::Path>) -> anyhow::Result<()> {
    let log_handle = init_logging(&config);
    tracing::info!(
        "effective configuration (secrets redacted):\n{}",
        config.redacted_toml()
    );
    tokend::cores::serve(config, || {
        reload_log_level(config_path, log_handle.as_ref())
    })?;
    Ok(())
}
