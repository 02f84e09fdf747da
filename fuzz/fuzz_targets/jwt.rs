//! Access-token decoding and verification, `tokend::tokens::verify`, with
//! real keys: an Ed25519, a P-256 and an RSA-2048 key generated once per
//! process (as `tokend keys rotate` makes them), and real tokens signed with
//! them by `tokend::tokens::sign_access`.
//!
//! The first byte of the input picks a mode:
//!
//! - `0`, garbage: the rest of the input, as text, is the token. Nothing in
//!   it was signed in this process (the keys are new), so it must never
//!   verify (but for the templates below, written as seeds by
//!   `JWT_SEED_DIR` and read back by the same process).
//! - `1`, signed: `[1, signer, n, edits (4 bytes each) × n, header, '\n',
//!   payload]`. Header and payload are any bytes (`$KID0`, `$KID1`, `$KID2`
//!   in them become the kids of the three keys, so seeds stay valid across
//!   runs); they are base64url-encoded and signed with the Ed25519
//!   (`signer` even) or the P-256 key (odd), so that the checks after the
//!   signature (claims, their types, the header values) are reached with
//!   any claims. RSA signing costs a millisecond, so it signs only the
//!   templates below; RS256 verification is reached through them.
//! - `2`, template: `[2, which, n, edits × n]`: one of the tokens signed at
//!   start-up by `sign_access` (each key, with and without a username).
//!
//! The edits (`op, position (2 bytes), value`), applied to the token text
//! after signing, are what mutates a real token: set, insert or delete a
//! byte, cut, put in a segment of a template token, flip a bit of a
//! segment's decoded bytes. An edited token is checked as the server
//! would check it.
//!
//! Invariants checked besides "never panics":
//! - nothing verifies that was not signed: a token that verifies carries
//!   the exact header and payload (signing input) that one of the keys
//!   signed in this process (the signature itself may differ only as the
//!   algorithm allows, e.g. ECDSA's `s` and `n - s`);
//! - a verified token is in date at `NOW`, has the expected `iss` and `aud`,
//!   and its forward-auth headers are `X-Auth-…` lines with no control
//!   character (no header injection).
#![no_main]

use std::sync::LazyLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::EncodingKey;
use libfuzzer_sys::fuzz_target;
use tokend::config::Algorithm;
use tokend::tokens::keys::{generate, KeyEntry, KeyMaterial};
use tokend::tokens::{sign_access, verify, AccessClaims, CoreKeys, Expectations, VerifiedToken};

const NOW: u64 = 1_700_000_000;
const ISS: &str = "https://auth.example";
const AUD: &str = "tokend";
const ALGS: [Algorithm; 3] = [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256];

struct World {
    /// Every key: what the server verifies with.
    keys: CoreKeys,
    kids: Vec<String>,
    /// The Ed25519 and P-256 keys, to sign any header and payload.
    raw_signers: Vec<(EncodingKey, jsonwebtoken::Algorithm)>,
    /// Real tokens from `sign_access`.
    templates: Vec<String>,
    expect: Expectations,
    /// `JWT_VERBOSE` set: print each outcome (to check what seeds reach).
    verbose: bool,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let generated: Vec<_> = ALGS
        .iter()
        .map(|&alg| generate(alg).expect("generate a key"))
        .collect();
    let entry = |k| KeyEntry::from_generated(k, 0).expect("key entry");
    let keys = CoreKeys::from_material(
        &KeyMaterial::from_entries(generated.iter().map(entry).collect()).expect("material"),
    )
    .expect("core keys");
    let raw_signers = vec![
        (
            EncodingKey::from_ed_der(generated[0].pkcs8().expose()),
            jsonwebtoken::Algorithm::EdDSA,
        ),
        (
            EncodingKey::from_ec_der(generated[1].pkcs8().expose()),
            jsonwebtoken::Algorithm::ES256,
        ),
    ];
    let mut templates = Vec::new();
    for k in &generated {
        let alone =
            CoreKeys::from_material(&KeyMaterial::from_entries(vec![entry(k)]).expect("material"))
                .expect("core keys");
        for username in [Some("alice".to_string()), None] {
            let claims = AccessClaims {
                iss: ISS.into(),
                sub: "0b7e-user".into(),
                aud: AUD.into(),
                exp: NOW + 900,
                iat: NOW,
                jti: "Jp0TzMmbcb0kjN5TNAg1rw".into(),
                client_id: "web".into(),
                scope: "read write".into(),
                username,
            };
            templates.push(sign_access(&alone, &claims, NOW).expect("sign"));
        }
    }
    let world = World {
        keys,
        kids: generated.iter().map(|k| k.kid().to_string()).collect(),
        raw_signers,
        templates,
        expect: Expectations::new(ISS, AUD, 0),
        verbose: std::env::var_os("JWT_VERBOSE").is_some(),
    };
    // Each template verifies, or the target tests nothing.
    for t in &world.templates {
        verify(&world.keys, t, &world.expect, NOW).expect("a template verifies");
    }
    // `JWT_SEED_DIR=fuzz/corpus/jwt` writes the templates as garbage-mode
    // seeds (real tokens, whose keys a later process does not know).
    if let Some(dir) = std::env::var_os("JWT_SEED_DIR") {
        for (i, t) in world.templates.iter().enumerate() {
            let alg = ["eddsa", "es256", "rs256"][i / 2];
            let path = std::path::Path::new(&dir).join(format!("seed-token-{alg}-{i}"));
            std::fs::write(path, [&[0u8][..], t.as_bytes()].concat()).expect("write seed");
        }
    }
    world
});

fuzz_target!(
    init: {
        LazyLock::force(&WORLD);
    },
    |data: &[u8]| {
        let w = &*WORLD;
        let Some((&mode, rest)) = data.split_first() else {
            return;
        };
        match mode % 3 {
            0 => {
                let token = String::from_utf8_lossy(rest);
                judge(w, &token, &[]);
            }
            1 => signed(w, rest),
            _ => template(w, rest),
        }
    }
);

/// Mode 1: sign the given header and payload, edit, verify.
fn signed(w: &World, data: &[u8]) {
    let [signer, n, rest @ ..] = data else {
        return;
    };
    let Some((edits, body)) = split_edits(*n, rest) else {
        return;
    };
    let mut body = body.to_vec();
    for (i, kid) in w.kids.iter().enumerate() {
        body = replace(&body, format!("$KID{i}").as_bytes(), kid.as_bytes());
    }
    let (header, payload) = match body.iter().position(|&b| b == b'\n') {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (&body[..], &b""[..]),
    };
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let (key, alg) = &w.raw_signers[usize::from(*signer % 2)];
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, *alg).expect("sign");
    let token = format!("{message}.{signature}");
    check(w, &token, edits, &[&message]);
}

/// Mode 2: a real token from `sign_access`, edited, verified.
fn template(w: &World, data: &[u8]) {
    let [which, n, rest @ ..] = data else {
        return;
    };
    let Some((edits, _)) = split_edits(*n, rest) else {
        return;
    };
    let token = &w.templates[usize::from(*which) % w.templates.len()];
    check(w, token, edits, &[]);
}

/// Up to 7 edits of 4 bytes, then the rest.
fn split_edits(n: u8, rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = usize::from(n % 8) * 4;
    (rest.len() >= len).then(|| rest.split_at(len))
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// Applies the edits to `token`, verifies, and checks what verified.
/// `signed` holds the signing inputs signed in this call, besides the
/// templates'.
fn check(w: &World, token: &str, edits: &[u8], signed: &[&str]) {
    let mut t = token.as_bytes().to_vec();
    for e in edits.chunks_exact(4) {
        edit(
            w,
            &mut t,
            e[0],
            usize::from(u16::from_le_bytes([e[1], e[2]])),
            e[3],
        );
    }
    let Ok(token) = String::from_utf8(t) else {
        // A header value is bytes, but nothing that is not ASCII gets past
        // the token68 check; `verify` takes text.
        return;
    };
    judge(w, &token, signed);
}

/// Verifies `token` as the server does and checks what verified.
fn judge(w: &World, token: &str, signed: &[&str]) {
    let got = verify(&w.keys, token, &w.expect, NOW);
    if w.verbose {
        eprintln!("{got:?} ← {token}");
    }
    let Ok(v) = got else {
        return;
    };
    let input = token.rsplit_once('.').map_or("", |(m, _)| m);
    let was_signed = signed.contains(&input)
        || w.templates
            .iter()
            .any(|t| t.rsplit_once('.').is_some_and(|(m, _)| m == input));
    assert!(
        was_signed,
        "verified a token that was not signed: {token:?}"
    );
    verified(&v);
}

fn edit(w: &World, t: &mut Vec<u8>, op: u8, pos: usize, val: u8) {
    match op % 6 {
        0 if !t.is_empty() => {
            let at = pos % t.len();
            t[at] = val;
        }
        1 if !t.is_empty() => {
            t.remove(pos % t.len());
        }
        2 => {
            t.insert(pos % (t.len() + 1), val);
        }
        3 => t.truncate(pos % (t.len() + 1)),
        4 => {
            // Segment `val % 3` from a template.
            let from = &w.templates[pos % w.templates.len()];
            let k = usize::from(val % 3);
            let Some(seg) = from.split('.').nth(k) else {
                return;
            };
            let mut parts: Vec<Vec<u8>> = t.split(|&b| b == b'.').map(<[u8]>::to_vec).collect();
            if let Some(p) = parts.get_mut(k) {
                *p = seg.as_bytes().to_vec();
                *t = parts.join(&b'.');
            }
        }
        5 => {
            // Flip a bit of segment `val % 3`'s decoded bytes, re-encode.
            let k = usize::from(val % 3);
            let mut parts: Vec<Vec<u8>> = t.split(|&b| b == b'.').map(<[u8]>::to_vec).collect();
            let Some(p) = parts.get_mut(k) else {
                return;
            };
            let Ok(mut raw) = URL_SAFE_NO_PAD.decode(&*p) else {
                return;
            };
            if raw.is_empty() {
                return;
            }
            let at = pos % raw.len();
            raw[at] ^= 1 << (val >> 5);
            *p = URL_SAFE_NO_PAD.encode(raw).into_bytes();
            *t = parts.join(&b'.');
        }
        _ => {}
    }
}

fn verified(v: &VerifiedToken) {
    assert!(NOW < v.exp, "expired token verified: {v:?}");
    assert_eq!((v.iss.as_str(), v.aud.as_str()), (ISS, AUD));
    let headers = v.forward_auth_headers();
    let text = std::str::from_utf8(headers).expect("headers are UTF-8");
    let lines = text
        .strip_suffix("\r\n")
        .expect("headers end in CRLF")
        .split("\r\n");
    for line in lines {
        assert!(line.starts_with("X-Auth-"), "header line {line:?}");
        assert!(
            !line.bytes().any(|b| b < 0x20 || b == 0x7f),
            "control character in {line:?}"
        );
    }
}
