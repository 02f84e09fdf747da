//! Hello-world on may_minihttp: answers every request with `200 ok`, the
//! same body as tokend's `/healthz`. `bench/run.sh` pins it to one core.
//!
//! Usage: tokend-baseline [ADDR] (default 127.0.0.1:8090). Worker threads:
//! env BASELINE_WORKERS (default 1, to match tokend's one pinned core).

use std::io;

use may_minihttp::{HttpServer, HttpService, Request, Response};

#[derive(Clone)]
struct Hello;

impl HttpService for Hello {
    fn call(&mut self, _req: Request, res: &mut Response) -> io::Result<()> {
        res.header("Content-Type: text/plain; charset=utf-8");
        res.body("ok\n");
        Ok(())
    }
}

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8090".into());
    let workers: usize = std::env::var("BASELINE_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1);
    may::config().set_workers(workers);
    let server = HttpServer(Hello).start(&addr).expect("bind");
    eprintln!("baseline listening on http://{addr}");
    server.join().expect("server");
}
