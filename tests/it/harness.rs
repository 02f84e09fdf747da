//! The test harness: starts a real `tokend serve` on `127.0.0.1:0` with its
//! own PostgreSQL database (cloned from a template migrated once) and its own
//! Redis key prefix, and removes both when dropped. No fixed ports, no shared
//! state between tests, no mocks.

use std::io::{BufRead, BufReader, Read, Write};

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// The database fixture and the TOKEND_TEST_* settings are the library's
// own (`tokend::testing`), shared with the unit tests.
pub use tokend::testing::{database_url as admin_url, random_suffix, redis_url, TestDb};

/// Deletes every Redis key under `prefix`.
pub fn redis_cleanup(prefix: &str) {
    let Ok(target) = tokend::redis::RedisTarget::parse(&redis_url()) else {
        return;
    };
    let Ok(mut r) = tokend::redis::BlockingRedis::connect(&target, Duration::from_secs(2)) else {
        return;
    };
    let script = "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) n = n + 1 end return n";
    let _ = r.query(
        redis::cmd("EVAL")
            .arg(script)
            .arg(0)
            .arg(format!("{prefix}*")),
    );
}

/// A running `tokend serve`.
pub struct TestServer {
    pub addr: SocketAddr,
    pub prefix: String,
    pub db: Option<TestDb>,
    child: Option<Child>,
    pub stderr_lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    own_prefix: bool,
}

/// How to start a test server.
pub struct Options {
    pub env: Vec<(String, String)>,
    /// Reuse this database instead of creating one.
    pub db_url: Option<String>,
    /// Reuse this Redis prefix (another node of the same deployment).
    pub prefix: Option<String>,
    pub cores: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            env: Vec::new(),
            db_url: None,
            prefix: None,
            cores: 2,
        }
    }
}

/// A 32-byte key-encryption key, base64, shared by every test server of a run
/// so that nodes of one deployment can read each other's keys.
pub fn test_kek() -> &'static str {
    "dG9rZW5kLXRlc3Qta2V5LWVuY3J5cHRpb24ta2V5ISE="
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::with(Options::default())
    }

    pub fn with_env(env: &[(&str, &str)]) -> TestServer {
        Self::with(Options {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Options::default()
        })
    }

    pub fn with(opts: Options) -> TestServer {
        let (db, db_url) = match opts.db_url {
            Some(u) => (None, u),
            None => {
                let db = TestDb::new();
                let u = db.url.clone();
                (Some(db), u)
            }
        };
        let own_prefix = opts.prefix.is_none();
        let prefix = opts
            .prefix
            .unwrap_or_else(|| format!("tokend-test:{}:", random_suffix()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokend"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TOKEND_SERVER_LISTEN", "127.0.0.1:0")
            .env("TOKEND_SERVER_CORES", opts.cores.to_string())
            .env("TOKEND_DATABASE_URL", &db_url)
            .env("TOKEND_REDIS_URL", redis_url())
            .env("TOKEND_REDIS_PREFIX", &prefix)
            .env("TOKEND_KEYS_KEK", test_kek())
            .env("TOKEND_PASSWORDS_MEMORY_KIB", "64")
            .env("TOKEND_PASSWORDS_ITERATIONS", "1")
            .env("TOKEND_LIMITS_BLOCKING_THREADS", "2")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start tokend");
        let stderr = child.stderr.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(i) = line.find("listening on http://") {
                        let addr = line[i + "listening on http://".len()..]
                            .split_whitespace()
                            .next()
                            .unwrap_or("")
                            .to_string();
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(addr);
                        }
                    }
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a.parse().expect("listen address"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "tokend did not start:\n{}",
                    lines.lock().unwrap().join("\n")
                );
            }
        };
        TestServer {
            addr,
            prefix,
            db,
            child: Some(child),
            stderr_lines: lines,
            own_prefix,
        }
    }

    pub fn db_url(&self) -> Option<&str> {
        self.db.as_ref().map(|d| d.url.as_str())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe_kill(child.id(), libc::SIGTERM);
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "tokend did not exit within 20 s of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.stderr_lines.lock().unwrap().join("\n")
    }

    /// Opens a connection.
    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// A new connection wrapped for reading responses.
    pub fn conn(&self) -> Conn {
        Conn::new(self.connect())
    }

    /// One request on a new connection.
    pub fn request(&self, raw: &str) -> Response {
        let mut c = self.conn();
        c.send(raw.as_bytes());
        c.read_response().expect("a response")
    }

    pub fn get(&self, path: &str) -> Response {
        self.request(&format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        ))
    }

    pub fn get_auth(&self, path: &str, authorization: &str) -> Response {
        self.request(&format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: {authorization}\r\nConnection: close\r\n\r\n"
        ))
    }

    /// A form POST with optional Basic credentials.
    pub fn post_form(
        &self,
        path: &str,
        basic: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> Response {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let auth = basic
            .map(|(u, p)| {
                use base64::Engine;
                let enc =
                    |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let raw = format!("{}:{}", enc(u), enc(p));
                format!(
                    "Authorization: Basic {}\r\n",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                )
            })
            .unwrap_or_default();
        self.request(&format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ))
    }

    /// A JSON POST with an optional bearer token.
    pub fn post_json(&self, path: &str, bearer: Option<&str>, json: &str) -> Response {
        let auth = bearer
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        self.request(&format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
            json.len()
        ))
    }
}

fn unsafe_kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we spawned and a valid signal number has no
    // memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.own_prefix {
            redis_cleanup(&self.prefix);
        }
    }
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A client connection with its own read buffer, so pipelined responses
/// are read one at a time.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).unwrap();
    }

    /// Reads one response (Content-Length framed). `None` when the
    /// connection closed (or timed out) before a whole response came.
    pub fn read_response(&mut self) -> Option<Response> {
        let mut chunk = [0u8; 8192];
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(head_len)) = resp.parse(&self.buf) {
                let status = resp.code.unwrap_or(0);
                let hs: Vec<(String, String)> = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let len: usize = hs
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.parse().unwrap())
                    .expect("every response carries Content-Length");
                while self.buf.len() < head_len + len {
                    let n = self.stream.read(&mut chunk).ok()?;
                    if n == 0 {
                        return None;
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                let body = self.buf[head_len..head_len + len].to_vec();
                self.buf.drain(..head_len + len);
                return Some(Response {
                    status,
                    headers: hs,
                    body,
                });
            }
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// True when the server closed the connection (EOF) within `timeout`.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut b = [0u8; 64];
        let start = Instant::now();
        loop {
            match self.stream.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => {
                    let _ = start;
                    return false;
                }
            }
        }
    }
}

/// A raw keep-alive `POST /oauth/token` as client `app` (Basic credentials)
/// with a form `body`, for tests that send it from their own connections and
/// threads.
pub fn raw_token_request(secret: &str, body: &str) -> String {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("app:{secret}"));
    format!(
        "POST /oauth/token HTTP/1.1\r\nAuthorization: Basic {basic}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Waits until `f` returns true or `timeout` passes (polling every 50 ms);
/// returns whether it did. The way to wait for a server to reach a state:
/// a fixed sleep is either too short on a loaded machine or wasted time.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A sample of `server`'s metrics page: the value of the line that starts
/// with `name` and a space (labels included in `name`, e.g.
/// `tokend_open_connections{core="0"}`).
pub fn metric(server: &TestServer, name: &str) -> f64 {
    let page = server.get("/metrics").text();
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{page}"))
}

// ---------------------------------------------------------------------------
// For the attack tests (tests/it/attack.rs): a well-behaved client that keeps
// validating while others misbehave, and the server's resident memory.

/// What a [`SteadyClient`] saw.
#[derive(Debug)]
pub struct SteadyReport {
    /// Requests answered with the expected status.
    pub answered: u64,
    /// The slowest of them: from writing the request to having read the
    /// whole response.
    pub worst: Duration,
    /// Their mean.
    pub mean: Duration,
    /// The first request that was not answered as expected, and what came
    /// instead; the client stops there.
    pub failure: Option<String>,
}

/// A well-behaved client in a thread of its own: one keep-alive connection,
/// one request at a time (each answered before the next is sent), with a
/// pause of [`SteadyClient::PAUSE`] between them, until [`SteadyClient::finish`]
/// or its first failure. It counts its answers and keeps its worst latency.
pub struct SteadyClient {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    answered: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<SteadyReport>>,
}

impl SteadyClient {
    /// Between two requests. A client that never paused would measure how
    /// busy the test machine's two CPUs are rather than how the server
    /// treats it; a millisecond still sends hundreds of requests a second.
    pub const PAUSE: Duration = Duration::from_millis(1);

    /// Starts sending `request` (one whole keep-alive request) to `addr`,
    /// expecting `status` each time.
    pub fn start(addr: SocketAddr, request: String, status: u16) -> SteadyClient {
        use std::sync::atomic::Ordering::Relaxed;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let thread = {
            let (stop, answered) = (stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut report = SteadyReport {
                    answered: 0,
                    worst: Duration::ZERO,
                    mean: Duration::ZERO,
                    failure: None,
                };
                let mut total = Duration::ZERO;
                let stream = match TcpStream::connect(addr) {
                    Ok(s) => s,
                    Err(e) => {
                        report.failure = Some(format!("connect: {e}"));
                        return report;
                    }
                };
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                stream.set_nodelay(true).unwrap();
                let mut c = Conn::new(stream);
                while !stop.load(Relaxed) {
                    let start = Instant::now();
                    if let Err(e) = c.stream.write_all(request.as_bytes()) {
                        report.failure =
                            Some(format!("request {}: write: {e}", report.answered + 1));
                        break;
                    }
                    let r = c.read_response();
                    let took = start.elapsed();
                    match r {
                        Some(r) if r.status == status => {
                            report.answered += 1;
                            report.worst = report.worst.max(took);
                            total += took;
                            answered.fetch_add(1, Relaxed);
                        }
                        Some(r) => {
                            report.failure = Some(format!(
                                "request {}: {} after {took:?}: {}",
                                report.answered + 1,
                                r.status,
                                r.text()
                            ));
                            break;
                        }
                        None => {
                            report.failure = Some(format!(
                                "request {}: no response (closed or timed out after {took:?})",
                                report.answered + 1
                            ));
                            break;
                        }
                    }
                    std::thread::sleep(Self::PAUSE);
                }
                if report.answered > 0 {
                    report.mean = total / report.answered as u32;
                }
                report
            })
        };
        SteadyClient {
            stop,
            answered,
            thread: Some(thread),
        }
    }

    /// Requests answered as expected so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the client and returns what it saw.
    pub fn finish(mut self) -> SteadyReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .expect("finished once")
            .join()
            .expect("the steady client's thread")
    }
}

impl Drop for SteadyClient {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The resident memory of process `pid` in KiB (`VmRSS` in
/// /proc/<pid>/status); 0 once it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Samples a process's resident memory every 20 ms in a thread, keeping the
/// peak, until [`PeakRss::finish`].
pub struct PeakRss {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl PeakRss {
    pub fn start(pid: u32) -> PeakRss {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut peak = rss_kib(pid);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                    peak = peak.max(rss_kib(pid));
                }
                peak
            })
        };
        PeakRss {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the peak in KiB.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().expect("finished once").join().unwrap()
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A stand-in for an app beside tokend (nginx's upstream, the host of a
/// redirect URI): a listener on 127.0.0.1 that hands every connection to
/// `serve` on a thread of its own (a browser opens connections it may never
/// send a request on), and the records `serve` keeps. Stops when dropped.
pub struct FakeApp<S> {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<S>>>,
    stop: Arc<AtomicBool>,
}

impl<S: Send + 'static> FakeApp<S> {
    pub fn start(serve: fn(TcpStream, &Mutex<Vec<S>>) -> Option<()>) -> FakeApp<S> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let seen = seen.clone();
                    std::thread::spawn(move || serve(conn, &seen));
                }
            });
        }
        FakeApp { addr, seen, stop }
    }

    /// What it has recorded so far, and forgets it.
    pub fn take(&self) -> Vec<S> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    /// What it has recorded so far.
    pub fn seen(&self) -> Vec<S>
    where
        S: Clone,
    {
        self.seen.lock().unwrap().clone()
    }
}

impl<S> Drop for FakeApp<S> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}
