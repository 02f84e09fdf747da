//! `tokend::http::parse`: the request head and body framing parser, on any
//! bytes, with the default limits (and two other limit sets, so the limit
//! paths are reached with short inputs).
//!
//! Invariants checked besides "never panics":
//! - a `Complete` length never exceeds the input, nor `max_head + max_body`;
//!   the body is exactly the bytes before that length, after the head;
//! - the request parses the same from exactly its own bytes (what follows a
//!   request never changes it), and its bytes minus the last one are
//!   `Partial` (never an error, never another request);
//! - a prefix of the input never disagrees with the whole: a `Complete`
//!   prefix means the same `Complete` whole, an error on a prefix means an
//!   error on the whole (so how TCP cuts a request cannot change its fate).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokend::http::{bearer_token, parse, Limits, Parsed, Request};

/// The limits tokend runs with, the smallest the configuration allows for the
/// head, and the most headers it allows (above the parser's own cap of 256).
const LIMITS: [Limits; 3] = [
    Limits {
        max_head: 8192,
        max_body: 65536,
        max_headers: 64,
    },
    Limits {
        max_head: 256,
        max_body: 16,
        max_headers: 2,
    },
    Limits {
        max_head: 8192,
        max_body: 65536,
        max_headers: 1024,
    },
];

fuzz_target!(|data: &[u8]| {
    let default = Limits::default();
    assert_eq!(
        (default.max_head, default.max_body, default.max_headers),
        (
            LIMITS[0].max_head,
            LIMITS[0].max_body,
            LIMITS[0].max_headers
        ),
        "the default limits changed: update LIMITS[0]"
    );
    for limits in &LIMITS {
        check(data, limits);
    }
});

fn check(data: &[u8], limits: &Limits) {
    let whole = parse(data, limits);
    match &whole {
        Ok(Parsed::Complete(req, n)) => complete(data, limits, req, *n),
        Ok(Parsed::Partial) => {}
        Err(e) => {
            assert!(matches!(e.status(), 400 | 411 | 413 | 431), "{e:?}");
            assert!(e.message().ends_with('\n'));
        }
    }
    // Prefixes: the middle of the input, and one byte short of it.
    for cut in [data.len() / 2, data.len().saturating_sub(1)] {
        match parse(&data[..cut], limits) {
            Ok(Parsed::Complete(req, n)) => match &whole {
                Ok(Parsed::Complete(w, m)) => {
                    assert_eq!(n, *m, "prefix of {cut} bytes");
                    assert_eq!(format!("{req:?}"), format!("{w:?}"));
                }
                other => panic!("a prefix of {cut} bytes completes, the whole gives {other:?}"),
            },
            Ok(Parsed::Partial) => {}
            Err(e) => assert!(
                whole.is_err(),
                "a prefix of {cut} bytes fails with {e:?}, the whole gives {whole:?}"
            ),
        }
    }
}

fn complete(data: &[u8], limits: &Limits, req: &Request<'_>, n: usize) {
    assert!(n <= data.len(), "Complete({n}) of {} bytes", data.len());
    assert!(n <= limits.max_head + limits.max_body);
    assert!(req.body.len() <= limits.max_body);
    // The body is a slice of the input that ends at `n`, after a head that
    // fits `max_head`.
    let start = (req.body.as_ptr() as usize).wrapping_sub(data.as_ptr() as usize);
    assert!(start <= n && start + req.body.len() == n, "body at {start}");
    assert!(start <= limits.max_head);
    assert!(req.path.starts_with('/') && !req.path.contains('?'));
    assert!(req.version <= 1);
    assert!(req.authorization.is_some() || req.authorization_count == 0);

    // The same request from exactly its own bytes.
    match parse(&data[..n], limits) {
        Ok(Parsed::Complete(again, m)) => {
            assert_eq!(m, n);
            assert_eq!(format!("{again:?}"), format!("{req:?}"));
        }
        other => panic!("its own {n} bytes give {other:?}"),
    }
    // One byte short: still waiting, nothing else.
    if n > 0 {
        let short = parse(&data[..n - 1], limits);
        assert!(
            matches!(short, Ok(Parsed::Partial)),
            "{} of {n} bytes give {short:?}",
            n - 1
        );
    }
    // What the handlers read next, on any request.
    let _ = bearer_token(req.authorization, req.authorization_count);
    let _ = req.content_type_is("application/x-www-form-urlencoded");
}
