use std::process::Command;

use crate::harness::*;

fn tokend() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tokend"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

#[test]
fn migrate_twice_is_a_no_op() {
    // A database that is not cloned from the template: empty.
    let db = TestDb::empty();
    let url = db.url.clone();
    let run = || {
        tokend()
            .args(["migrate"])
            .env("TOKEND_DATABASE_URL", &url)
            .env("TOKEND_KEYS_KEK", test_kek())
            .output()
            .unwrap()
    };
    let first = run();
    let second = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("applied 0001_init.sql"));
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        String::from_utf8_lossy(&second.stdout).contains("up to date"),
        "{}",
        String::from_utf8_lossy(&second.stdout)
    );
}

#[test]
fn config_errors_name_the_key() {
    let out = tokend()
        .args(["config", "check"])
        .env("TOKEND_SERVER_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.listen"), "{err}");

    let dir = std::env::temp_dir().join(format!("tokend-cfg-{}", random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tokend.toml");
    std::fs::write(&file, "[tokens]\naccess_tll = \"5m\"\n").unwrap();
    let out = tokend()
        .args(["config", "check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tokens.access_tll"), "{err}");
}

#[test]
fn config_check_redacts_secrets() {
    let out = tokend()
        .args(["config", "check"])
        .env("TOKEND_DATABASE_URL", "postgres://app:s3cret-pw@db/tokend")
        .env("TOKEND_KEYS_KEK", test_kek())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("s3cret-pw"), "{text}");
    assert!(!text.contains(test_kek()), "{text}");
    assert!(text.contains("[server]"));
}

#[test]
fn serve_refuses_an_unreachable_database() {
    let out = tokend()
        .args(["serve"])
        .env(
            "TOKEND_DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/tokend",
        )
        .env("TOKEND_DATABASE_CONNECT_TIMEOUT", "1s")
        .env("TOKEND_SERVER_LISTEN", "127.0.0.1:0")
        .env("TOKEND_KEYS_KEK", test_kek())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PostgreSQL"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn migrate_from_two_nodes_at_once() {
    let db = TestDb::empty();
    let url = db.url.clone();
    let spawn = || {
        tokend()
            .args(["migrate"])
            .env("TOKEND_DATABASE_URL", &url)
            .env("TOKEND_KEYS_KEK", test_kek())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let counts = postgres::Client::connect(&url, postgres::NoTls).and_then(|mut c| {
        let m: i64 = c
            .query_one("SELECT count(*) FROM tokend_schema_migrations", &[])?
            .get(0);
        let k: i64 = c
            .query_one("SELECT count(*) FROM signing_keys", &[])?
            .get(0);
        Ok((m, k))
    });
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let migrations = tokend::store::migrate::MIGRATIONS.len() as i64;
    assert_eq!(
        counts.unwrap(),
        (migrations, 1),
        "one row per migration and one signing key"
    );
}
