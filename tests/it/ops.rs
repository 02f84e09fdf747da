//! Operating tokend: the systemd unit, `scripts/install.sh` and the example
//! configuration. No server, database or Redis needed.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tokend_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tokend")
}

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("tokend-{what}-{}", random_suffix()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn show(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn unit_text() -> String {
    std::fs::read_to_string(repo().join("scripts/systemd/tokend.service")).unwrap()
}

/// `Key=value` settings of the unit, in order (a key may repeat).
fn unit_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn setting<'a>(settings: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn systemd_unit_has_the_required_settings() {
    let text = unit_text();
    let s = unit_settings(&text);
    for (key, value) in [
        ("Type", "notify"),
        (
            "ExecStart",
            "/usr/local/bin/tokend --config /etc/tokend/tokend.toml serve",
        ),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("WatchdogSec", "10s"),
        ("Restart", "on-failure"),
        ("User", "tokend"),
        ("Group", "tokend"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("LimitNOFILE", "1048576"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
    ] {
        assert_eq!(setting(&s, key), [value], "{key}");
    }
    assert!(setting(&s, "ReadWritePaths").is_empty());
    // io_uring must stay allowed (explicitly, for systemd versions whose
    // @system-service lacks it).
    let filters = setting(&s, "SystemCallFilter");
    let allow = filters
        .iter()
        .find(|f| !f.starts_with('~'))
        .expect("an allow-list filter");
    for call in [
        "@system-service",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
    ] {
        assert!(allow.split_whitespace().any(|w| w == call), "{call}");
    }
    for deny in filters.iter().filter(|f| f.starts_with('~')) {
        // Pinning the cores needs sched_setaffinity (in @resources).
        assert!(!deny.contains("@resources"), "{deny}");
    }
    // Stopping must outlast the graceful shutdown.
    let stop = setting(&s, "TimeoutStopSec");
    let stop = humantime::parse_duration(stop[0]).unwrap();
    let default = tokend::config::Config::default().server.shutdown_timeout;
    assert!(stop > default, "TimeoutStopSec {stop:?} <= {default:?}");
}

#[test]
fn systemd_unit_verifies() {
    if !have("systemd-analyze") {
        eprintln!("note: systemd-analyze not installed; skipping `systemd-analyze verify`");
        return;
    }
    let dir = TempDir::new("unit");
    let text = unit_text().replace("/usr/local/bin/tokend", tokend_bin());
    assert!(text.contains(tokend_bin()));
    let unit = dir.0.join("tokend.service");
    std::fs::write(&unit, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .unwrap();
    // Anything said about our unit is a finding (unknown keys, bad values,
    // missing binary); other units of the host are not our business.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let about_us: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("tokend.service") || l.contains("tokend"))
        .collect();
    assert!(
        out.status.success() && about_us.is_empty(),
        "{}",
        show(&out)
    );
}

/// Runs scripts/install.sh with `args`, not building, installing the test
/// binary.
fn install(args: &[&str]) -> Output {
    let out = Command::new("bash")
        .arg(repo().join("scripts/install.sh"))
        .arg("--no-build")
        .arg("--binary")
        .arg(tokend_bin())
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "install.sh {args:?}\n{}", show(&out));
    out
}

/// Every entry under `root`: relative path → (kind and mode, content).
fn tree(root: &Path) -> BTreeMap<String, (String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let mode = meta.permissions().mode() & 0o7777;
            let owner = format!("{}:{}", meta.uid(), meta.gid());
            if meta.is_dir() {
                out.insert(rel, (format!("dir {mode:o} {owner}"), Vec::new()));
                walk(root, &p, out);
            } else {
                let content = std::fs::read(&p).unwrap();
                out.insert(rel, (format!("file {mode:o} {owner}"), content));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn install_script_is_idempotent() {
    let root = TempDir::new("install");
    let r = root.0.to_str().unwrap();
    let first = install(&["--root", r]);
    let after_first = tree(&root.0);
    let second = install(&["--root", r]);
    let after_second = tree(&root.0);

    // Same files, modes, owners and contents; nothing left behind (no
    // temporary files), nothing regenerated (the KEK in particular).
    assert_eq!(
        after_first.keys().collect::<Vec<_>>(),
        after_second.keys().collect::<Vec<_>>()
    );
    assert!(after_first == after_second, "second run changed something");
    let expected = [
        "etc/systemd/system/tokend.service",
        "etc/tokend",
        "etc/tokend/kek",
        "etc/tokend/tokend.toml",
        "usr/local/bin/tokend",
    ];
    for path in expected {
        assert!(after_first.contains_key(path), "{path} not installed");
    }
    let files: Vec<&String> = after_first
        .iter()
        .filter(|(_, (kind, _))| kind.starts_with("file"))
        .map(|(p, _)| p)
        .collect();
    assert_eq!(files.len(), 4, "unexpected files: {files:?}");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("tokend: unchanged"), "{stderr}");
    assert!(stderr.contains("kek exists"), "{stderr}");
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        stdout.contains("tokend --config /etc/tokend/tokend.toml migrate")
            && stdout.contains("systemctl enable --now tokend"),
        "next steps missing:\n{stdout}"
    );

    let p = |rel: &str| root.0.join(rel);
    assert_eq!(mode(&p("usr/local/bin/tokend")), 0o755);
    assert_eq!(mode(&p("etc/tokend")), 0o750);
    assert_eq!(mode(&p("etc/tokend/tokend.toml")), 0o640);
    // Issue #13: 600, as tokend's own check and the README want (it was
    // 640 root:tokend, which tokend warned about at every start).
    assert_eq!(mode(&p("etc/tokend/kek")), 0o600);
    assert_eq!(mode(&p("etc/systemd/system/tokend.service")), 0o644);

    // Contents.
    assert_eq!(
        std::fs::read(p("usr/local/bin/tokend")).unwrap(),
        std::fs::read(tokend_bin()).unwrap()
    );
    assert_eq!(
        std::fs::read(p("etc/tokend/tokend.toml")).unwrap(),
        std::fs::read(repo().join("scripts/tokend.example.toml")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(p("etc/systemd/system/tokend.service")).unwrap(),
        unit_text()
    );
    use base64::Engine;
    let kek = std::fs::read_to_string(p("etc/tokend/kek")).unwrap();
    let kek = base64::engine::general_purpose::STANDARD
        .decode(kek.trim())
        .expect("KEK is base64");
    assert_eq!(kek.len(), 32);

    // The installed binary runs and takes the installed configuration.
    let out = Command::new(p("usr/local/bin/tokend"))
        .arg("--config")
        .arg(p("etc/tokend/tokend.toml"))
        .args(["config", "check"])
        .env_remove("TOKEND_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));

    // An edited configuration and an existing KEK survive a re-install; a
    // changed binary is replaced.
    std::fs::write(p("etc/tokend/tokend.toml"), "# mine\n").unwrap();
    std::fs::write(p("usr/local/bin/tokend"), "old").unwrap();
    let kek_before = std::fs::read(p("etc/tokend/kek")).unwrap();
    install(&["--root", r]);
    assert_eq!(
        std::fs::read_to_string(p("etc/tokend/tokend.toml")).unwrap(),
        "# mine\n"
    );
    assert_eq!(std::fs::read(p("etc/tokend/kek")).unwrap(), kek_before);
    assert_eq!(
        std::fs::read(p("usr/local/bin/tokend")).unwrap(),
        std::fs::read(tokend_bin()).unwrap()
    );
    assert_eq!(mode(&p("usr/local/bin/tokend")), 0o755);
}

#[test]
fn install_script_prefix_moves_the_binary_and_exec_start() {
    let root = TempDir::new("install-prefix");
    install(&[
        "--root",
        root.0.to_str().unwrap(),
        "--prefix",
        "/opt/tokend",
    ]);
    assert!(root.0.join("opt/tokend/bin/tokend").is_file());
    assert!(!root.0.join("usr/local/bin/tokend").exists());
    let unit = std::fs::read_to_string(root.0.join("etc/systemd/system/tokend.service")).unwrap();
    let s = unit_settings(&unit);
    assert_eq!(
        setting(&s, "ExecStart"),
        ["/opt/tokend/bin/tokend --config /etc/tokend/tokend.toml serve"]
    );
}

#[test]
fn install_script_passes_shellcheck() {
    let script = repo().join("scripts/install.sh");
    let out = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    if !have("shellcheck") {
        eprintln!("note: shellcheck not installed; skipping");
        return;
    }
    let out = Command::new("shellcheck")
        .arg("-x")
        .arg(&script)
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
}

/// `tokend config check` on a configuration text.
fn config_check(text: &str) -> Output {
    let dir = TempDir::new("config");
    let path = dir.0.join("tokend.toml");
    std::fs::write(&path, text).unwrap();
    let mut cmd = Command::new(tokend_bin());
    cmd.arg("--config").arg(&path).args(["config", "check"]);
    for (k, _) in std::env::vars() {
        if k.starts_with("TOKEND_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().unwrap()
}

#[test]
fn example_config_is_valid_and_complete() {
    let text = std::fs::read_to_string(repo().join("scripts/tokend.example.toml")).unwrap();
    let out = config_check(&text);
    assert!(out.status.success(), "{}", show(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("kek_file = \"/etc/tokend/kek\""),
        "{printed}"
    );

    // With every commented-out key enabled (except the inline KEK, which
    // would conflict with kek_file), it still parses: the keys exist.
    let enabled: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest)
                if rest.contains(" = ") && !rest.starts_with(' ') && !rest.starts_with("kek ") =>
            {
                rest.to_string()
            }
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let out = config_check(&enabled);
    assert!(out.status.success(), "{}\n{enabled}", show(&out));
    for key in [
        "public_url",
        "pool_size",
        "issuer",
        "blocking_threads",
        "kek",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("#{key} = "))),
            "optional key {key} is not shown"
        );
    }

    // Every key of the configuration is in the example, in its section.
    let defaults: toml::Table =
        toml::from_str(&toml::to_string(&tokend::config::Config::default()).unwrap()).unwrap();
    let example: toml::Table = toml::from_str(&enabled).unwrap();
    for (section, keys) in &defaults {
        let keys = keys.as_table().unwrap();
        let ours = example
            .get(section)
            .and_then(|s| s.as_table())
            .unwrap_or_else(|| panic!("section [{section}] missing"));
        for key in keys.keys() {
            assert!(ours.contains_key(key), "{section}.{key} missing");
        }
    }
}

#[test]
fn sd_notify_ready_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = std::env::temp_dir().join(format!("tokend-notify-{}", random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut server = TestServer::with(Options {
        env: vec![
            ("NOTIFY_SOCKET".into(), path.to_str().unwrap().into()),
            ("WATCHDOG_USEC".into(), "1000000".into()),
        ],
        ..Options::default()
    });
    let mut seen: Vec<String> = Vec::new();
    let mut buf = [0u8; 512];
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(5) {
        let Ok(n) = sock.recv(&mut buf) else { break };
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        if seen.iter().any(|m| m.contains("READY=1"))
            && seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2
        {
            break;
        }
    }
    assert!(seen.iter().any(|m| m.contains("READY=1")), "{seen:?}");
    assert!(
        seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2,
        "{seen:?}"
    );
    assert!(server.terminate().success());
    let mut stopping = false;
    while let Ok(n) = sock.recv(&mut buf) {
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(stopping, "no STOPPING=1");
}

#[test]
fn start_up_errors_are_one_line_and_never_a_panic() {
    let run = |env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tokend"));
        c.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TOKEND_SERVER_LISTEN", "127.0.0.1:0")
            .env("TOKEND_DATABASE_URL", admin_url());
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = run(&[]);
    assert!(!ok);
    assert!(err.contains("no key-encryption key"), "{err}");
    // The error itself is one line, the last, after the start-up log.
    let last = err.trim().lines().last().unwrap();
    assert!(
        last.starts_with("tokend: ") && last.contains("no key-encryption key"),
        "{err}"
    );
    let (ok, err) = run(&[("TOKEND_KEYS_KEK", "c2hvcnQ=")]);
    assert!(!ok);
    assert!(err.contains("32 bytes"), "{err}");
    let (ok, err) = run(&[("TOKEND_SERVER_BOGUS", "1")]);
    assert!(!ok);
    assert!(err.contains("server.bogus"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
