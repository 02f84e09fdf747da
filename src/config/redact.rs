//! Redaction of secrets in URLs, for logs, error messages and
//! `tokend config check`.
//!
//! Owns: [`redact_url`]. Never imports: anything outside `config`.

/// `url` with every credential in it replaced by `<redacted>`, for logs,
/// error messages and `tokend config check`.
///
/// Hides the password of the userinfo (`scheme://user:password@host`,
/// `scheme://:password@host`; for `redis://`, a lone `secret@` too) and the value of every query parameter whose
/// name (percent-decoded, any case) names a secret: `password`,
/// `sslpassword`, and anything containing `pass`, `secret`, `token` or
/// `pwd` (`?password=`, `&password=`, `;password=`, after a `#` too).
/// Over-redacting is the safe side of every doubt: the userinfo is taken to
/// end at the last `@` of the URL (PostgreSQL's parser ends it at the first,
/// the `url` crate at the last before the path, so a raw `@` or `/` in a
/// password is hidden either way), and a string without `scheme://` is not
/// a URL this function can read, so all of it is hidden when it holds an
/// `@` or a `=`.
pub fn redact_url(url: &str) -> String {
    const HIDDEN: &str = "<redacted>";
    let Some((scheme, rest)) = url.split_once("://") else {
        return if url.contains(['@', '=']) {
            HIDDEN.to_string()
        } else {
            url.to_string()
        };
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    out.push_str("://");
    let tail = match rest.rsplit_once('@') {
        Some((userinfo, tail)) => {
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(HIDDEN);
                }
                // `redis://secret@host` is a password in the user's place
                // (tokend refuses the URL; printing it must not leak it). A
                // PostgreSQL user alone is no secret.
                None if scheme.starts_with("redis") => out.push_str(HIDDEN),
                None => out.push_str(userinfo),
            }
            out.push('@');
            tail
        }
        None => rest,
    };
    // The host and path, then every parameter: `name=value` pieces between
    // separators (`?`, `&`, `;`, `#`), each kept or hidden by its name.
    // A piece without `=` right after a hidden value is taken for more of
    // it (a raw `&` in a password), and left out with its separator.
    let mut first = true;
    let mut hiding = false;
    for piece in tail.split_inclusive(['?', '&', ';', '#']) {
        let (body, sep) = match piece.char_indices().last() {
            Some((i, c @ ('?' | '&' | ';' | '#'))) => (&piece[..i], Some(c)),
            _ => (piece, None),
        };
        let param = body.split_once('=').filter(|_| !first);
        first = false;
        match param {
            Some((name, _)) if is_secret_param(name) => {
                out.push_str(name);
                out.push('=');
                out.push_str(HIDDEN);
                hiding = true;
            }
            None if hiding => continue,
            _ => {
                out.push_str(body);
                hiding = false;
            }
        }
        out.extend(sep);
    }
    out
}

/// Whether a URL query parameter's name (as written: percent-encoded, any
/// case) names a credential.
fn is_secret_param(raw_name: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(&raw_name.replace('+', " "))
        .decode_utf8_lossy()
        .to_ascii_lowercase();
    let name = decoded.trim();
    ["pass", "secret", "token", "pwd"]
        .iter()
        .any(|word| name.contains(word))
}
