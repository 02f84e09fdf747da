//! The README's nginx `auth_request` snippet, run as written with a real
//! nginx in front of a real tokend and a small application that records
//! the headers it receives. The snippet is read from README.md between its
//! markers, so the README cannot drift from what was tried.
//!
//! Without nginx the test says so and passes, except in CI (`CI` set),
//! where it fails: `scripts/services.sh --for-tests` installs nginx-light.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokend::identity::{clients, users, GrantType, Hasher};

use crate::harness::*;

/// Where the README's snippet reaches tokend and the application; the test
/// puts the real addresses in their place.
const README_TOKEND: &str = "http://127.0.0.1:8080";
const README_APP: &str = "http://127.0.0.1:9000";

/// The snippet: the `nginx` code block between the README's markers.
fn readme_snippet() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let begin = "<!-- nginx-auth-request:begin -->";
    let end = "<!-- nginx-auth-request:end -->";
    let from = readme
        .find(begin)
        .expect("README.md lost its nginx begin marker")
        + begin.len();
    let to = readme[from..]
        .find(end)
        .expect("README.md lost its nginx end marker")
        + from;
    let block = readme[from..to].trim();
    block
        .strip_prefix("```nginx\n")
        .and_then(|b| b.strip_suffix("```"))
        .expect("the markers hold one ```nginx block")
        .to_string()
}

/// The nginx binary: on `PATH`, or where Debian puts it (`/usr/sbin` is not
/// on every user's `PATH`).
fn find_nginx() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
}

/// A request the application received: its request line and headers
/// (names lowercased).
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// The application behind nginx: answers `200 app` to everything and
/// records what it received.
type App = FakeApp<Seen>;

impl App {
    /// One request per connection (nginx proxies with HTTP/1.0 and closes),
    /// recorded before it is answered: the test reads the record as soon
    /// as nginx passes the answer on.
    fn serve(conn: TcpStream, seen: &Mutex<Vec<Seen>>) -> Option<()> {
        conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let mut reader = BufReader::new(conn);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let mut headers = Vec::new();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).ok()?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (n, v) = h.split_once(':')?;
            let (n, v) = (n.trim().to_ascii_lowercase(), v.trim().to_string());
            if n == "content-length" {
                length = v.parse().ok()?;
            }
            headers.push((n, v));
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        seen.lock().unwrap().push(Seen {
            line: line.trim_end().to_string(),
            headers,
        });
        let mut conn = reader.into_inner();
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\napp")
            .ok()
    }
}

/// A running nginx (master and worker), stopped and its directory removed
/// when dropped.
struct Nginx {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl Nginx {
    /// Writes `server_body` into a whole configuration under a new temporary
    /// directory and runs nginx on a free port. Every path nginx writes to
    /// is inside that directory, so it runs as any user; as root its
    /// workers run as root too (the default `nobody` may lack a group of
    /// that name, and needs no more rights here).
    fn start(binary: &Path, server_body: &str) -> Nginx {
        let dir = std::env::temp_dir().join(format!("tokend-nginx-{}", random_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut last_error = String::new();
        // The free port is found by binding and closing it, so another
        // process can take it before nginx does: try again then.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            // SAFETY: geteuid(2) has no preconditions and cannot fail.
            let root = unsafe { libc::geteuid() } == 0;
            let d = dir.display();
            let conf = format!(
                "{user}worker_processes 1;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n\
                 access_log off;\n\
                 client_body_temp_path {d}/client_body;\n\
                 proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fastcgi;\n\
                 uwsgi_temp_path {d}/uwsgi;\n\
                 scgi_temp_path {d}/scgi;\n\
                 server {{\n\
                 listen 127.0.0.1:{port};\n\
                 {server_body}\n\
                 }}\n\
                 }}\n",
                user = if root { "user root;\n" } else { "" },
            );
            std::fs::write(dir.join("nginx.conf"), conf).unwrap();
            let mut child = Command::new(binary)
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .arg("-g")
                .arg(format!("daemon off; pid {d}/nginx.pid; error_log stderr;"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start nginx");
            let stderr = Arc::new(Mutex::new(String::new()));
            {
                let (pipe, stderr) = (child.stderr.take().unwrap(), stderr.clone());
                std::thread::spawn(move || {
                    for line in BufReader::new(pipe).lines() {
                        let Ok(line) = line else { break };
                        let mut s = stderr.lock().unwrap();
                        s.push_str(&line);
                        s.push('\n');
                    }
                });
            }
            let end = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    // Let the reader thread catch the last lines.
                    std::thread::sleep(Duration::from_millis(100));
                    last_error = format!("nginx exited ({status}):\n{}", stderr.lock().unwrap());
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Nginx {
                        child: Some(child),
                        port,
                        dir,
                        stderr,
                    };
                }
                if Instant::now() > end {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "nginx did not listen within 10 s:\n{}",
                        stderr.lock().unwrap()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !last_error.contains("Address already in use") {
                break;
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("{last_error}");
    }

    /// `GET path` through nginx, with an optional bearer token and extra
    /// header lines.
    fn get(&self, path: &str, token: Option<&str>, extra: &str) -> Response {
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let mut c = Conn::new(TcpStream::connect(("127.0.0.1", self.port)).unwrap());
        c.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        c.send(
            format!(
                "GET {path} HTTP/1.1\r\nHost: app.test\r\n{auth}{extra}Connection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        c.read_response()
            .unwrap_or_else(|| panic!("no answer from nginx:\n{}", self.log()))
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM: nginx's fast shutdown, which stops its worker too (a
            // SIGKILL would leave the worker behind, holding the port).
            // SAFETY: kill(2) on our own child process.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > end {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Users alice (read) and carol (read admin), client `app` (password;
/// scopes read admin) and `svc` (client_credentials; scope read) in a new
/// database, and tokend on it using the Redis at `redis_url`; returns the
/// server and the secrets.
fn deployment(redis_url: &str) -> (TestServer, TestDb, String, String) {
    let db = TestDb::new();
    let mut c = db.client();
    let hasher = Hasher::new(&tokend::config::PasswordsConfig {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    })
    .unwrap();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    for (name, scopes) in [("alice", s(&["read"])), ("carol", s(&["read", "admin"]))] {
        users::create(
            &mut c,
            name,
            &hasher.hash(crate::tokens::PASSWORD).unwrap(),
            &scopes,
        )
        .unwrap();
    }
    let (_, app) = clients::create(
        &mut c,
        "app",
        &[GrantType::Password],
        &s(&["read", "admin"]),
        false,
    )
    .unwrap();
    let (_, svc) = clients::create(
        &mut c,
        "svc",
        &[GrantType::ClientCredentials],
        &s(&["read"]),
        false,
    )
    .unwrap();
    let server = TestServer::with(Options {
        db_url: Some(db.url.clone()),
        env: vec![("TOKEND_REDIS_URL".into(), redis_url.into())],
        cores: 1,
        ..Options::default()
    });
    (server, db, app.unwrap(), svc.unwrap())
}

fn token(server: &TestServer, client: (&str, &str), form: &[(&str, &str)]) -> String {
    let r = server.post_form("/oauth/token", Some(client), form);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["access_token"].as_str().unwrap().to_string()
}

/// What tokend itself answers `GET /validate` with for `token`: the
/// headers the application must receive through nginx.
fn vouched(server: &TestServer, token: &str) -> Vec<(String, String)> {
    let r = server.get_auth("/validate", &format!("Bearer {token}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let mut h: Vec<(String, String)> = r
        .headers
        .iter()
        .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-auth-"))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect();
    h.sort();
    h
}

/// The `x-auth-*` headers the application received, sorted.
fn forwarded(seen: &Seen) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = seen
        .headers
        .iter()
        .filter(|(n, _)| n.starts_with("x-auth-"))
        .cloned()
        .collect();
    h.sort();
    h
}

#[test]
fn the_readme_auth_request_snippet_forwards_the_identity_and_requires_scopes() {
    let Some(binary) = find_nginx() else {
        if std::env::var_os("CI").is_some() {
            panic!("nginx is not installed, and CI must run this test: scripts/services.sh --for-tests installs nginx-light");
        }
        println!(
            "SKIPPED the_readme_auth_request_snippet_forwards_the_identity_and_requires_scopes: nginx is not installed (apt-get install nginx-light, or scripts/services.sh --for-tests)"
        );
        return;
    };
    // A Redis of its own, to stop it at the end.
    let mut redis = crate::lifecycle::PrivateRedis::start();
    let (server, _db, app_secret, svc_secret) = deployment(&redis.url());
    let app = App::start(App::serve);

    let snippet = readme_snippet();
    for (from, what) in [(README_TOKEND, "tokend"), (README_APP, "the application")] {
        assert!(
            snippet.contains(from),
            "the README's snippet no longer reaches {what} at {from}; update this test with it"
        );
    }
    let body = snippet
        .replace(README_TOKEND, &format!("http://{}", server.addr))
        .replace(README_APP, &format!("http://{}", app.addr));
    let nginx = Nginx::start(&binary, &body);

    // No token, a malformed one, a forged one: 401 with tokend's challenge,
    // and the application never asked.
    for (token, error) in [
        (None, "invalid_request"),
        (Some("not-a-jwt"), "invalid_token"),
        (
            Some("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl"),
            "invalid_token",
        ),
    ] {
        let r = nginx.get("/api/hello", token, "");
        assert_eq!(r.status, 401, "{token:?}: {}\n{}", r.text(), nginx.log());
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer ") && challenge.contains(error),
            "{token:?}: {challenge:?}"
        );
    }
    assert!(app.take().is_empty());

    // A user's token: the application gets all five headers, as tokend
    // vouched for them.
    let login = |user: &str| {
        token(
            &server,
            ("app", &app_secret),
            &[
                ("grant_type", "password"),
                ("username", user),
                ("password", crate::tokens::PASSWORD),
            ],
        )
    };
    let alice = login("alice");
    let r = nginx.get("/api/hello?x=1", Some(&alice), "");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), nginx.log());
    assert_eq!(r.text(), "app");
    let seen = app.take();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].line, "GET /api/hello?x=1 HTTP/1.0");
    let expected = vouched(&server, &alice);
    let names: Vec<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "x-auth-client-id",
            "x-auth-expires",
            "x-auth-scope",
            "x-auth-subject",
            "x-auth-username"
        ]
    );
    assert_eq!(forwarded(&seen[0]), expected);
    assert_eq!(seen[0].header("x-auth-username"), Some("alice"));
    assert_eq!(seen[0].header("x-auth-scope"), Some("read"));
    assert_eq!(seen[0].header("x-auth-client-id"), Some("app"));

    // A location that requires the scope `admin`: 403 for alice's token,
    // without the application being asked; 200 for carol's, which has it.
    let r = nginx.get("/admin/users", Some(&alice), "");
    assert_eq!(r.status, 403, "{}\n{}", r.text(), nginx.log());
    assert!(app.take().is_empty());
    let carol = login("carol");
    let r = nginx.get("/admin/users", Some(&carol), "");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), nginx.log());
    let seen = app.take();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].line, "GET /admin/users HTTP/1.0");
    assert_eq!(forwarded(&seen[0]), vouched(&server, &carol));
    assert_eq!(seen[0].header("x-auth-scope"), Some("read admin"));

    // A client's own X-Auth-* headers never reach the application: a
    // client_credentials token has no user, and the X-Auth-Username the
    // client wrote itself is dropped, not passed on.
    let svc = token(
        &server,
        ("svc", &svc_secret),
        &[("grant_type", "client_credentials")],
    );
    let forged = "X-Auth-Username: carol\r\nx-auth-subject: carol\r\nX-Auth-Scope: admin\r\n";
    let r = nginx.get("/api/hello", Some(&svc), forged);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), nginx.log());
    let seen = app.take();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(forwarded(&seen[0]), vouched(&server, &svc));
    assert_eq!(seen[0].all("x-auth-username"), Vec::<&str>::new());
    assert_eq!(seen[0].all("x-auth-subject"), ["svc"]);
    assert_eq!(seen[0].all("x-auth-scope"), ["read"]);
    // And forged headers with no token at all get nowhere.
    let r = nginx.get("/admin/users", None, forged);
    assert_eq!(r.status, 401);
    assert!(app.take().is_empty());

    // A revoked token is refused at once.
    let r = server.post_form(
        "/oauth/revoke",
        Some(("app", &app_secret)),
        &[("token", &carol)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = nginx.get("/admin/users", Some(&carol), "");
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(app.take().is_empty());

    // Redis down: tokend answers 503 (it cannot tell whether the token was
    // revoked), which auth_request turns into 500. Never a 200.
    redis.stop();
    for path in ["/api/hello", "/admin/users"] {
        let r = nginx.get(path, Some(&alice), "");
        assert_eq!(r.status, 500, "{path}: {}\n{}", r.text(), nginx.log());
    }
    assert!(app.take().is_empty());
    // And back by itself when Redis is.
    redis.run();
    assert!(
        eventually(Duration::from_secs(10), || nginx
            .get("/api/hello", Some(&alice), "")
            .status
            == 200),
        "no 200 after Redis came back\n{}",
        server.log()
    );
}
