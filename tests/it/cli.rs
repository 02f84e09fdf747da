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

/// `tokend client …` against `db`, as an operator runs it.
fn client_cli(db: &TestDb, args: &[&str]) -> std::process::Output {
    tokend()
        .arg("client")
        .args(args)
        .env("TOKEND_DATABASE_URL", &db.url)
        .output()
        .unwrap()
}

/// Issue #16: a client of the authorization code flow is added with its
/// redirect URIs, and `client list` shows them (text and JSON).
#[test]
fn client_add_for_the_code_flow_and_list_shows_its_uris() {
    let db = TestDb::new();
    let out = client_cli(
        &db,
        &[
            "add",
            "spa",
            "--public",
            "--grant",
            "authorization_code",
            "--grant",
            "refresh_token",
            "--scope",
            "openid",
            "--redirect-uri",
            "https://app.example.com/callback",
            "--redirect-uri",
            "com.example.app:/oauth2redirect",
            "--redirect-uri",
            "http://127.0.0.1:8400/cb",
            "--post-logout-redirect-uri",
            "https://app.example.com/",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("public client: no secret"), "{text}");
    assert!(
        text.contains("redirect_uri:  https://app.example.com/callback"),
        "{text}"
    );
    let out = client_cli(
        &db,
        &[
            "add",
            "web",
            "--grant",
            "authorization_code",
            "--redirect-uri",
            "https://web.example.com/oauth/callback",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let added: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(added["client_secret"]
        .as_str()
        .unwrap()
        .starts_with("tokend_cs_"));
    let out = client_cli(&db, &["add", "svc", "--grant", "client_credentials"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Text: one line per URI under its client.
    let out = client_cli(&db, &["list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let spa = lines.iter().position(|l| l.starts_with("spa ")).unwrap();
    assert!(
        lines[spa].contains("public") && lines[spa].contains("authorization_code,refresh_token"),
        "{text}"
    );
    assert_eq!(
        &lines[spa + 1..spa + 5],
        [
            "    redirect_uri https://app.example.com/callback",
            "    redirect_uri com.example.app:/oauth2redirect",
            "    redirect_uri http://127.0.0.1:8400/cb",
            "    post_logout_redirect_uri https://app.example.com/",
        ],
        "{text}"
    );
    let svc = lines.iter().position(|l| l.starts_with("svc ")).unwrap();
    assert!(lines[svc + 1].starts_with("web "), "{text}");

    // JSON: every client, its URIs, never a secret.
    let out = client_cli(&db, &["list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["spa", "svc", "web"]);
    assert_eq!(list[0]["type"], "public");
    assert_eq!(
        list[0]["grant_types"],
        serde_json::json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(
        list[0]["redirect_uris"],
        serde_json::json!([
            "https://app.example.com/callback",
            "com.example.app:/oauth2redirect",
            "http://127.0.0.1:8400/cb"
        ])
    );
    assert_eq!(
        list[0]["post_logout_redirect_uris"],
        serde_json::json!(["https://app.example.com/"])
    );
    assert_eq!(list[1]["redirect_uris"], serde_json::json!([]));
    assert_eq!(list[2]["type"], "confidential");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("tokend_cs_"));
}

/// Issue #16: every rule on the new flags is refused with a message that
/// names the flag and the rule, and nothing is stored.
#[test]
fn client_add_refuses_bad_redirect_uris_naming_the_flag_and_the_rule() {
    let db = TestDb::new();
    let long = format!("https://app.example.com/{}", "x".repeat(2048));
    let mut seventeen: Vec<String> = Vec::new();
    for i in 0..17 {
        seventeen.push("--redirect-uri".into());
        seventeen.push(format!("https://app.example.com/cb{i}"));
    }
    let code = ["add", "app", "--grant", "authorization_code"];
    let with = |extra: &[&str]| -> Vec<String> {
        code.iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            with(&[]),
            "--grant authorization_code needs at least one --redirect-uri",
        ),
        (
            with(&["--post-logout-redirect-uri", "https://app.example.com/"]),
            "--grant authorization_code needs at least one --redirect-uri",
        ),
        (
            ["add", "app", "--grant", "password", "--redirect-uri", "https://app.example.com/cb"]
                .map(String::from)
                .to_vec(),
            "--redirect-uri is only for clients of the authorization code flow: add --grant authorization_code",
        ),
        (
            ["add", "app", "--grant", "client_credentials", "--post-logout-redirect-uri", "https://app.example.com/"]
                .map(String::from)
                .to_vec(),
            "--post-logout-redirect-uri is only for clients of the authorization code flow",
        ),
        (
            with(&["--redirect-uri", "http://app.example.com/cb"]),
            "--redirect-uri \"http://app.example.com/cb\" uses http on a host that is not loopback: use https, or http only on 127.0.0.1, [::1] or localhost",
        ),
        (
            with(&["--redirect-uri", "https://app.example.com/cb#done"]),
            "--redirect-uri \"https://app.example.com/cb#done\" must not have a fragment",
        ),
        (
            with(&["--redirect-uri", "/callback"]),
            "--redirect-uri \"/callback\" is not an absolute URI",
        ),
        (
            with(&["--redirect-uri", "https://app.example.com@evil.example/"]),
            "must not hold a user name or password",
        ),
        (
            with(&["--redirect-uri", "myapp://callback"]),
            "must use https, http on a loopback host (127.0.0.1, [::1], localhost), or a native app's private-use scheme with a dot",
        ),
        (
            with(&["--redirect-uri", "javascript:alert(1)"]),
            "must use https",
        ),
        (
            with(&["--redirect-uri", "https://app.example.com/a b"]),
            "holds a character a URI may not contain",
        ),
        (
            with(&["--redirect-uri", long.as_str()]),
            "is longer than 2048 bytes",
        ),
        (
            with(&seventeen.iter().map(String::as_str).collect::<Vec<_>>()),
            "at most 16 --redirect-uri URIs per client",
        ),
        (
            with(&[
                "--redirect-uri",
                "https://app.example.com/cb",
                "--post-logout-redirect-uri",
                "http://evil.example/",
            ]),
            "--post-logout-redirect-uri \"http://evil.example/\" uses http on a host that is not loopback",
        ),
        (
            ["add", "app", "--public", "--grant", "client_credentials"]
                .map(String::from)
                .to_vec(),
            "--public with --grant client_credentials",
        ),
        (
            ["add", "app", "--grant", "implicit"].map(String::from).to_vec(),
            "unknown grant \"implicit\": use password, refresh_token, client_credentials or authorization_code",
        ),
    ];
    for (args, want) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = client_cli(&db, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted: {args:?}");
        assert!(err.contains(want), "{args:?}\nwant: {want}\ngot:  {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = client_cli(&db, &["list", "--json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}
