//! Issue #16 item 7: a user signs in through a real headless browser
//! (Debian's `chromium`, driven through `chromedriver`): the app sends the
//! browser to `/authorize` (RFC 6749 §4.1.1, RFC 7636 S256, OpenID Connect
//! `nonce`), the user finds the fields by their labels, types a wrong
//! password and sees the uniform error, types the right one, and the
//! browser lands on the app's redirect URI (a small listener of the test on
//! 127.0.0.1) with `code`, `state` unchanged and `iss` (RFC 9207). The code
//! is exchanged with the PKCE verifier; a second authorization in the same
//! browser is answered by the session cookie, without the form (single
//! sign-on). What only a real browser shows: that it keeps and sends the
//! cookies as tokend sets them, that the page's `Content-Security-Policy`
//! lets the form's answer redirect to the app (Chromium applies
//! `form-action` to the redirect that answers a form), and that it refuses
//! to show the page in a frame (`frame-ancestors 'none'`,
//! `X-Frame-Options: DENY`).
//!
//! Without chromium or chromedriver the test says so and passes, except in
//! CI (`CI` set), where it fails: `scripts/services.sh --for-tests`
//! installs Debian's `chromium` and `chromium-driver`.
//!
//! The browser is driven by the W3C WebDriver protocol (JSON over HTTP),
//! spoken here directly on a `std::net::TcpStream` with `serde_json`: a
//! dozen calls. No WebDriver crate: `thirtyfour` 0.38 needs Rust 1.88 (our
//! rust-version is 1.85); `fantoccini` 0.22 fits, but would bring about 30
//! crates (hyper, a tokio runtime, ICU segmentation data) and async code
//! into a synchronous suite for those dozen calls.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokend::identity::{clients, GrantType, NewClient};

use crate::authorize::{authorize_path, issuer, jwt_claims, param, pkce};
use crate::harness::*;
use crate::tokens::{seed, PASSWORD};

/// How long the browser may take for one step (a page load, a redirect):
/// generous, because the machines that run the suite are slow and busy.
const STEP: Duration = Duration::from_secs(30);

/// The WebDriver name of an element reference (W3C WebDriver §12.1).
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// `name` on `PATH` or in one of `also` (Debian puts chromedriver in
/// `/usr/bin` and, in some releases, only in `/usr/lib/chromium`).
fn find_program(name: &str, also: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(also.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The app behind the redirect URI: answers `200` with a small page to
/// every request, and records the request targets it was sent.
type App = FakeApp<String>;

impl App {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// One request per connection (answered with `Connection: close`).
    /// `/frame?src=URL` is a page that shows `URL` in a frame; anything
    /// else a page that says the app was reached.
    fn serve(conn: TcpStream, seen: &Mutex<Vec<String>>) -> Option<()> {
        conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let mut reader = BufReader::new(conn);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).ok()?;
            if h.trim_end().is_empty() {
                break;
            }
        }
        let target = line.split_whitespace().nth(1)?.to_string();
        seen.lock().unwrap().push(target.clone());
        let body = match target.strip_prefix("/frame?src=") {
            Some(src) => {
                let src: String = form_urlencoded::parse(format!("src={src}").as_bytes())
                    .map(|(_, v)| v.into_owned())
                    .next()?;
                // The URL is the test's own, HTML-escaped all the same.
                let src = src.replace('&', "&amp;").replace('"', "&quot;");
                format!("<!DOCTYPE html><title>framing app</title><iframe id=\"f\" src=\"{src}\"></iframe>")
            }
            None => "<!DOCTYPE html><title>the app</title><p id=\"app\">signed in</p>".to_string(),
        };
        let mut conn = reader.into_inner();
        conn.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .ok()
    }
}

/// A WebDriver error answer (W3C WebDriver §6.6): its `error` code and
/// message.
#[derive(Debug)]
struct WdError {
    error: String,
    message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

/// chromedriver on a free port and one headless Chromium session, in a
/// directory of their own (profile, `HOME`, `TMPDIR`, logs). Dropping it,
/// also while a failed assertion unwinds, ends the session, stops
/// chromedriver and every process it started, and removes the directory.
struct Chrome {
    driver: Option<Child>,
    port: u16,
    dir: PathBuf,
    session: Option<String>,
}

impl Chrome {
    fn start(chromium: &Path, chromedriver: &Path) -> Chrome {
        let dir = std::env::temp_dir().join(format!("tokend-browser-{}", random_suffix()));
        for sub in ["home", "tmp", "profile"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let mut chrome = Chrome {
            driver: None,
            port: 0,
            dir,
            session: None,
        };
        // The free port is found by binding and closing it, so another
        // process can take it before chromedriver does: try again then.
        for attempt in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let d = &chrome.dir;
            let child = Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .arg(format!(
                    "--log-path={}",
                    d.join("chromedriver.log").display()
                ))
                // HOME, the XDG directories and TMPDIR inside the test's
                // directory: Chromium writes its crash database under
                // ~/.config and scratch files under $TMPDIR, and the test
                // leaves nothing behind.
                .env("HOME", d.join("home"))
                .env("XDG_CONFIG_HOME", d.join("home/.config"))
                .env("XDG_CACHE_HOME", d.join("home/.cache"))
                .env("XDG_DATA_HOME", d.join("home/.local/share"))
                .env("TMPDIR", d.join("tmp"))
                // Its own process group, so that whatever it started can be
                // stopped together.
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver");
            chrome.driver = Some(child);
            chrome.port = port;
            let ready = eventually(STEP, || {
                if chrome.driver_exited() {
                    return true;
                }
                chrome
                    .call("GET", "/status", None)
                    .map(|v| v["ready"] == true)
                    .unwrap_or(false)
            });
            if !chrome.driver_exited() && ready {
                break;
            }
            let log = chrome.log();
            chrome.stop_driver();
            if attempt == 2 || !log.contains("bind") {
                panic!("chromedriver did not start on port {port}:\n{log}");
            }
        }
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let mut args = vec![
            "--headless=new".to_string(),
            format!("--user-data-dir={}", chrome.dir.join("profile").display()),
            // /dev/shm is small in containers; Chromium then writes there
            // until it crashes.
            "--disable-dev-shm-usage".into(),
            "--window-size=1024,900".into(),
            // Nothing but the test's own requests: no first-run pages, no
            // background fetches of updates, safe browsing lists or fonts.
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            "--password-store=basic".into(),
        ];
        if root {
            // Chromium refuses to start its sandbox as root.
            args.push("--no-sandbox".into());
        }
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "goog:chromeOptions": {
                        "binary": chromium.to_str().unwrap(),
                        "args": args,
                    },
                },
            },
        });
        let v = chrome
            .call("POST", "/session", Some(caps))
            .unwrap_or_else(|e| panic!("no browser session: {e}\n{}", chrome.log()));
        chrome.session = Some(v["sessionId"].as_str().unwrap().to_string());
        chrome
    }

    fn driver_exited(&mut self) -> bool {
        match &mut self.driver {
            Some(c) => c.try_wait().ok().flatten().is_some(),
            None => true,
        }
    }

    /// The end of chromedriver's log, for failure messages.
    fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("chromedriver.log")).unwrap_or_default();
        let start = log.len().saturating_sub(4000);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(0);
        log[start..].to_string()
    }

    /// One WebDriver command: `method path` with an optional JSON body;
    /// the answer's `value`, or its error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, WdError> {
        let io = |e: &dyn std::fmt::Display| WdError {
            error: "io".into(),
            message: e.to_string(),
        };
        let stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| io(&e))?;
        // A navigation answers when the page has loaded.
        stream
            .set_read_timeout(Some(STEP * 2))
            .map_err(|e| io(&e))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut conn = Conn::new(stream);
        conn.stream
            .write_all(
                format!(
                    "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    self.port,
                    body.len()
                )
                .as_bytes(),
            )
            .map_err(|e| io(&e))?;
        let r = conn
            .read_response()
            .ok_or_else(|| io(&"no answer from chromedriver"))?;
        let v: Value = serde_json::from_slice(&r.body).map_err(|e| io(&e))?;
        let value = v["value"].clone();
        if r.status == 200 {
            return Ok(value);
        }
        Err(WdError {
            error: value["error"].as_str().unwrap_or("?").to_string(),
            message: value["message"].as_str().unwrap_or("").to_string(),
        })
    }

    /// A command of the session; panics on an error.
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let session = self.session.as_deref().expect("a session");
        self.call(method, &format!("/session/{session}{path}"), body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    fn url(&self) -> String {
        self.cmd("GET", "/url", None).as_str().unwrap().to_string()
    }

    /// Waits until the page's URL starts with `prefix`; returns it.
    fn wait_url(&self, prefix: &str) -> String {
        let mut url = String::new();
        let ok = eventually(STEP, || {
            url = self.url();
            url.starts_with(prefix)
        });
        assert!(
            ok,
            "the browser is at {url}, not at {prefix}…, showing {}",
            self.cmd("GET", "/title", None)
        );
        url
    }

    /// The element `selector` (`using`: a W3C location strategy), waiting
    /// for it to appear.
    fn find(&self, using: &str, selector: &str) -> String {
        let session = self.session.as_deref().expect("a session");
        let body = json!({ "using": using, "value": selector });
        let mut last = None;
        let found = eventually(STEP, || {
            match self.call(
                "POST",
                &format!("/session/{session}/element"),
                Some(body.clone()),
            ) {
                Ok(v) => {
                    last = v[ELEMENT].as_str().map(String::from);
                    true
                }
                Err(e) => {
                    assert_eq!(e.error, "no such element", "{e}");
                    false
                }
            }
        });
        assert!(found, "no element {using} {selector} in {}", self.url());
        last.unwrap()
    }

    /// Whether `selector` is on the page now.
    fn present(&self, using: &str, selector: &str) -> bool {
        let session = self.session.as_deref().expect("a session");
        let body = json!({ "using": using, "value": selector });
        let r = self.call("POST", &format!("/session/{session}/elements"), Some(body));
        !r.unwrap().as_array().unwrap().is_empty()
    }

    /// The input a user finds by its visible label: the `<label>` whose
    /// text is `label`, and the element its `for` names. Checks that the
    /// browser's accessibility tree names the input by that label too
    /// (W3C WebDriver §12.4.10, Get Computed Label).
    fn field(&self, label: &str) -> String {
        let l = self.find("xpath", &format!("//label[normalize-space()='{label}']"));
        let id = self.cmd("GET", &format!("/element/{l}/attribute/for"), None);
        let id = id.as_str().expect("the label names its input");
        let input = self.find("css selector", &format!("#{id}"));
        let name = self.cmd("GET", &format!("/element/{input}/computedlabel"), None);
        assert_eq!(name, label, "the input's accessible name");
        input
    }

    /// Clears `element` and types `text` into it, key by key.
    fn type_into(&self, element: &str, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{element}/clear"),
            Some(json!({})),
        );
        self.cmd(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn click(&self, element: &str) {
        self.cmd(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
    }

    fn text(&self, element: &str) -> String {
        let v = self.cmd("GET", &format!("/element/{element}/text"), None);
        v.as_str().unwrap().to_string()
    }

    fn property(&self, element: &str, name: &str) -> Value {
        self.cmd("GET", &format!("/element/{element}/property/{name}"), None)
    }

    /// Signs in on the page shown now as a user would: the fields by their
    /// labels, the button by its text.
    fn fill_in(&self, username: &str, password: &str) {
        let user = self.field("Username");
        let pass = self.field("Password");
        self.type_into(&user, username);
        self.type_into(&pass, password);
        let button = self.find("xpath", "//button[normalize-space()='Sign in']");
        self.click(&button);
    }

    /// Stops chromedriver and every process of its group (Chromium and its
    /// helpers), then any process still naming the test's directory (the
    /// crash handlers Chromium starts in sessions of their own).
    fn stop_driver(&mut self) {
        if let Some(mut child) = self.driver.take() {
            let pgid = child.id() as i32;
            // SAFETY: killpg(2) on the process group we created for our
            // own child (process_group(0) above).
            unsafe { libc::killpg(pgid, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: as above; whatever ignored SIGTERM.
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in processes_naming(&self.dir) {
            // SAFETY: kill(2) on a process whose command line names the
            // directory this test created: one it started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// The processes whose command line contains `dir`.
fn processes_naming(dir: &Path) -> Vec<i32> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}

impl Drop for Chrome {
    fn drop(&mut self) {
        // Ends the session first: chromedriver then quits Chromium cleanly.
        if let Some(session) = self.session.take() {
            let _ = self.call("DELETE", &format!("/session/{session}"), None);
        }
        self.stop_driver();
        // The processes are gone once no process names the directory.
        eventually(Duration::from_secs(10), || {
            processes_naming(&self.dir).is_empty()
        });
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A new authorization request for `client` back to `redirect_uri`: the URL
/// to send the browser to, and the state, nonce and PKCE verifier the app
/// keeps.
struct Request {
    url: String,
    state: String,
    nonce: String,
    verifier: String,
}

fn request(server: &TestServer, client: &str, redirect_uri: &str) -> Request {
    let (verifier, challenge) = pkce();
    // A state with characters that must survive encoding both ways.
    let state = format!("st/ä te&x={}", random_suffix());
    let nonce = format!("n-{}", random_suffix());
    let path = authorize_path(&[
        ("response_type", "code"),
        ("client_id", client),
        ("redirect_uri", redirect_uri),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
        ("scope", "openid read"),
        ("state", &state),
        ("nonce", &nonce),
    ]);
    Request {
        url: format!("http://{}{path}", server.addr),
        state,
        nonce,
        verifier,
    }
}

/// The query parameters of the URL the browser landed on, which must be
/// `redirect_uri` followed by a query.
fn landed(url: &str, redirect_uri: &str) -> Vec<(String, String)> {
    let query = url
        .strip_prefix(redirect_uri)
        .and_then(|r| r.strip_prefix('?'))
        .unwrap_or_else(|| panic!("{url} is not {redirect_uri}?…"));
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// The code of a landing: `state` unchanged and `iss` (RFC 9207) checked.
fn code_of(url: &str, redirect_uri: &str, req: &Request, iss: &str) -> String {
    let back = landed(url, redirect_uri);
    assert_eq!(param(&back, "error"), None, "{url}");
    assert_eq!(param(&back, "state"), Some(req.state.as_str()), "{url}");
    assert_eq!(param(&back, "iss"), Some(iss), "{url}");
    param(&back, "code").expect("a code").to_string()
}

/// Exchanges `code` (client `browser-app`, Basic, with the verifier) and
/// returns the token response.
fn exchange(
    server: &TestServer,
    secret: &str,
    code: &str,
    redirect_uri: &str,
    req: &Request,
) -> Value {
    let r = server.post_form(
        "/oauth/token",
        Some(("browser-app", secret)),
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", &req.verifier),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// RFC 6749 §4.1, RFC 7636, RFC 9207, OpenID Connect Core §3.1 in
/// Chromium: a wrong password shows the uniform error, the right one lands
/// on the app with a code the app exchanges; the browser session then signs
/// the user in without the form; the page cannot be framed.
#[test]
fn a_user_signs_in_through_a_real_browser() {
    let (Some(chromium), Some(chromedriver)) = (
        find_program("chromium", &["/usr/bin", "/usr/lib/chromium"]),
        find_program("chromedriver", &["/usr/bin", "/usr/lib/chromium"]),
    ) else {
        if std::env::var_os("CI").is_some() {
            panic!("chromium or chromedriver is not installed, and CI must run this test: scripts/services.sh --for-tests installs chromium and chromium-driver");
        }
        println!(
            "SKIPPED a_user_signs_in_through_a_real_browser: chromium or chromedriver is not installed (apt-get install chromium chromium-driver, or scripts/services.sh --for-tests)"
        );
        return;
    };
    let started = Instant::now();

    // The app first: its redirect URI carries the listener's port.
    let app = App::start(App::serve);
    let redirect_uri = app.url("/cb");
    let db = TestDb::new();
    seed(&db);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let (_, secret) = clients::create_client(
        &mut db.client(),
        &NewClient {
            client_id: "browser-app",
            grants: &[GrantType::AuthorizationCode, GrantType::RefreshToken],
            scopes: &s(&["openid", "read"]),
            redirect_uris: &s(&[&redirect_uri]),
            ..NewClient::default()
        },
    )
    .unwrap();
    let secret = secret.unwrap();
    let server = TestServer::with(Options {
        db_url: Some(db.url.clone()),
        cores: 1,
        ..Options::default()
    });
    let iss = issuer(&server);
    let chrome = Chrome::start(&chromium, &chromedriver);

    // The app sends the browser to tokend: the sign-in page.
    let first = request(&server, "browser-app", &redirect_uri);
    chrome.go(&first.url);
    chrome.find(
        "xpath",
        "//h1[starts-with(normalize-space(), 'Sign in to')]",
    );

    // A wrong password: the page again, with the uniform error, the
    // username kept and the password not.
    chrome.fill_in("alice", "not the password");
    let alert = chrome.find("css selector", "[role=alert]");
    assert_eq!(chrome.text(&alert), "Incorrect username or password.");
    assert!(chrome
        .url()
        .starts_with(&format!("http://{}/", server.addr)));
    let user = chrome.field("Username");
    assert_eq!(chrome.property(&user, "value"), "alice");
    let pass = chrome.field("Password");
    assert_eq!(chrome.property(&pass, "value"), "");

    // The right password: the form's answer redirects the browser to the
    // app (allowed by the page's form-action), with a code.
    chrome.fill_in("alice", PASSWORD);
    let url = chrome.wait_url(&redirect_uri);
    assert!(chrome.present("css selector", "#app"), "the app's page");
    let code = code_of(&url, &redirect_uri, &first, &iss);
    assert!(
        app.seen().iter().any(|t| t.contains(&code)),
        "the app received the code: {:?}",
        app.seen()
    );

    // The app exchanges it with the verifier: an ID token for alice with
    // the request's nonce.
    let tokens = exchange(&server, &secret, &code, &redirect_uri, &first);
    let id = jwt_claims(tokens["id_token"].as_str().expect("an id_token"));
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(id["nonce"], first.nonce.as_str());
    assert_eq!(id["aud"], "browser-app");
    assert_eq!(id["preferred_username"], "alice");
    let info = server.get_auth("/userinfo", &format!("Bearer {access}"));
    assert_eq!(info.status, 200, "{}", info.text());
    assert_eq!(info.json()["sub"], id["sub"]);
    assert_eq!(info.json()["preferred_username"], "alice");

    // Single sign-on: the same browser, a new request, no form: the
    // session cookie answers with a code at once.
    let second = request(&server, "browser-app", &redirect_uri);
    let before = app.seen().len();
    chrome.go(&second.url);
    let url = chrome.wait_url(&redirect_uri);
    let code2 = code_of(&url, &redirect_uri, &second, &iss);
    assert_ne!(code2, code);
    assert!(app.seen()[before..].iter().any(|t| t.contains(&code2)));
    let tokens = exchange(&server, &secret, &code2, &redirect_uri, &second);
    let id2 = jwt_claims(tokens["id_token"].as_str().expect("an id_token"));
    assert_eq!(id2["nonce"], second.nonce.as_str());
    assert_eq!(id2["sub"], id["sub"]);
    // The password was typed once: auth_time is the first sign-in's.
    assert_eq!(id2["auth_time"], id["auth_time"]);

    // frame-ancestors 'none' and X-Frame-Options: DENY: a page of another
    // origin that frames the sign-in page shows no form. First, that the
    // framing page itself works: a frame of the app's own page loads.
    let framed = |src: &str| {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("src", src)
            .finish();
        chrome.go(&app.url(&format!("/frame?{q}")));
        let frame = chrome.find("css selector", "#f");
        chrome.cmd("POST", "/frame", Some(json!({ "id": { ELEMENT: frame } })));
    };
    framed(&app.url("/inner"));
    chrome.find("css selector", "#app");
    chrome.cmd("POST", "/frame/parent", Some(json!({})));
    // prompt=login: the page would be shown even with the session.
    let third = request(&server, "browser-app", &redirect_uri);
    let login_page = format!("{}&prompt=login", third.url);
    framed(&login_page);
    // Chromium replaces a refused frame with its error page; wait until
    // the frame has left about:blank, then check what it shows.
    let session = chrome.session.clone().unwrap();
    let mut href = Value::Null;
    let settled = eventually(STEP, || {
        href = chrome
            .call(
                "POST",
                &format!("/session/{session}/execute/sync"),
                Some(json!({ "script": "return location.href", "args": [] })),
            )
            .unwrap_or(Value::Null);
        href.as_str().is_some_and(|h| h != "about:blank")
    });
    assert!(settled, "the frame never navigated: {href}");
    assert!(
        !chrome.present("css selector", "#username"),
        "framed: {href}"
    );
    assert!(
        !href
            .as_str()
            .unwrap()
            .starts_with(&format!("http://{}", server.addr)),
        "the sign-in page loaded in a frame: {href}"
    );
    chrome.cmd("POST", "/frame/parent", Some(json!({})));

    // Nothing left behind: the browser's processes and directory.
    let dir = chrome.dir.clone();
    drop(chrome);
    assert!(processes_naming(&dir).is_empty(), "browser processes left");
    assert!(!dir.exists(), "{} left", dir.display());
    println!(
        "a_user_signs_in_through_a_real_browser: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
