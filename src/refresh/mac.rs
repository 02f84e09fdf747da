//! The integrity tag of refresh records (issue #13): an HMAC-SHA256 under a
//! key derived from the KEK, over the fields that decide what a refresh
//! gives (see the module's head, "Integrity").
//!
//! Owns: [`RecordMac`] and what it covers ([`RecordFields`]). Never
//! imports: anything of the crate.

/// What a record's integrity tag covers: every field that decides what a
/// refresh gives, none of which changes within a family.
pub struct RecordFields<'a> {
    pub family: &'a str,
    pub sub: &'a str,
    pub username: Option<&'a str>,
    pub client_id: &'a str,
    pub scope: &'a str,
    pub family_start: u64,
}

/// The integrity tag of refresh records: HMAC-SHA256 under a key derived
/// from the KEK ([`RecordMac::PURPOSE`]), lowercase hex in the record's
/// `mac` field. Checked in constant time.
pub struct RecordMac {
    key: aws_lc_rs::hmac::Key,
}

impl RecordMac {
    /// The HKDF purpose of the key: `Kek::derive(RecordMac::PURPOSE)`.
    pub const PURPOSE: &'static str = "tokend refresh-record mac v1";

    /// Tags under `key` (32 bytes, derived from the KEK).
    pub fn new(key: &[u8; 32]) -> RecordMac {
        RecordMac {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key),
        }
    }

    /// The fields, each length-prefixed (so that no two different records
    /// encode alike), after a version label.
    fn input(f: &RecordFields<'_>) -> Vec<u8> {
        let start = f.family_start.to_string();
        let mut out = Vec::with_capacity(128 + f.scope.len());
        out.extend_from_slice(b"tokend-rt-v1");
        for field in [
            Some(f.family),
            Some(f.sub),
            f.username,
            Some(f.client_id),
            Some(f.scope),
            Some(start.as_str()),
        ] {
            match field {
                Some(v) => {
                    out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                    out.extend_from_slice(v.as_bytes());
                }
                // No username (a `client_credentials`-style record): a length
                // no field can have.
                None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
            }
        }
        out
    }

    /// The tag of `fields`, lowercase hex.
    pub fn tag(&self, fields: &RecordFields<'_>) -> String {
        let tag = aws_lc_rs::hmac::sign(&self.key, &Self::input(fields));
        hex::encode(tag.as_ref())
    }

    /// Whether `tag` (lowercase hex, as stored) is the tag of `fields`.
    pub fn verify(&self, fields: &RecordFields<'_>, tag: &str) -> bool {
        let Ok(bytes) = hex::decode(tag) else {
            return false;
        };
        aws_lc_rs::hmac::verify(&self.key, &Self::input(fields), &bytes).is_ok()
    }
}
