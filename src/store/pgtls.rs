//! TLS to PostgreSQL (issue #14): `sslmode` and `sslrootcert` of
//! `database.url`, read as libpq reads them, and the rustls configuration
//! each mode asks for.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, and no
//! `sslrootcert`; it would also do the `SSLRequest` exchange itself, on the
//! bare socket, with no deadline on the server's one-byte answer. So both
//! parameters are taken out of the URL here, tokio-postgres keeps handing
//! the bare socket to tokend's connector before any byte is exchanged (see
//! `deadline`), and the connector sends the `SSLRequest`, reads the answer
//! and runs the rustls handshake, all within `database.connect_timeout`,
//! then puts the encrypted stream under the watch.
//!
//! The modes, as libpq's (<https://www.postgresql.org/docs/current/libpq-ssl.html>):
//! - `disable`, and `allow`/`prefer` (libpq's default): no TLS. tokend does
//!   not fall back from TLS to clear text: ask for `require` or better to
//!   encrypt.
//! - `require`: encrypted; the server's certificate is not checked, unless
//!   `sslrootcert` is given (then as `verify-ca`, as libpq does).
//! - `verify-ca`: the certificate must chain to `sslrootcert`.
//! - `verify-full`: and carry the host name connected to.
//!
//! `sslrootcert` is a PEM file, or `system` for the system's roots.
//!
//! Owns: reading the two parameters and building the rustls client
//! configuration. Never imports anything of the crate outside `store`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// What `sslmode` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgTlsMode {
    /// No TLS (`disable`, `allow`, `prefer`, or no `sslmode`).
    Off,
    /// Encrypted, the certificate not checked.
    Require,
    /// Encrypted, the certificate chains to the root.
    VerifyCa,
    /// Encrypted, the certificate chains to the root and names the host.
    VerifyFull,
}

/// TLS to PostgreSQL as `database.url` asks: the rustls configuration.
#[derive(Debug)]
pub struct PgTls {
    config: Arc<ClientConfig>,
    mode: PgTlsMode,
}

impl PgTls {
    /// The configuration for `mode` with the roots of `root_cert` (a PEM
    /// file, or `system`). `None` for [`PgTlsMode::Off`].
    pub fn new(mode: PgTlsMode, root_cert: Option<&Path>) -> Result<Option<PgTls>, String> {
        // libpq: `require` with a root certificate verifies the chain.
        let mode = match (mode, root_cert) {
            (PgTlsMode::Off, _) => return Ok(None),
            (PgTlsMode::Require, Some(_)) => PgTlsMode::VerifyCa,
            (m, _) => m,
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let config = match mode {
            PgTlsMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
                .with_no_client_auth(),
            PgTlsMode::VerifyCa | PgTlsMode::VerifyFull => {
                let Some(path) = root_cert else {
                    return Err(
                        "sslmode=verify-ca and verify-full need sslrootcert (a PEM file, or `system`)"
                            .into(),
                    );
                };
                let roots = Arc::new(load_roots(path)?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                let verifier: Arc<dyn ServerCertVerifier> = if mode == PgTlsMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(ChainOnly(webpki))
                };
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(verifier)
                    .with_no_client_auth()
            }
            PgTlsMode::Off => unreachable!("returned above"),
        };
        Ok(Some(PgTls {
            config: Arc::new(config),
            mode,
        }))
    }

    /// The mode in force (`require` with a root is `verify-ca`).
    pub fn mode(&self) -> PgTlsMode {
        self.mode
    }

    /// The rustls configuration, shared by every connection.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }
}

fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    if path == Path::new("system") {
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err("sslrootcert=system: the system has no CA certificates".into());
        }
        return Ok(roots);
    }
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "sslrootcert {}: cannot read certificates: {e}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "sslrootcert {}: no certificate in it",
            path.display()
        ));
    }
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// Takes `sslmode` and `sslrootcert` out of a libpq connection string (URL
/// or `key=value` form); returns the string without them, the mode and the
/// root. An `sslmode` libpq does not know is refused.
pub fn split_tls_params(url: &str) -> Result<(String, PgTlsMode, Option<PathBuf>), String> {
    let mut mode = PgTlsMode::Off;
    let mut root = None;
    let mut take = |key: &str, value: &str| -> Result<bool, String> {
        match key {
            "sslmode" => {
                mode = match value {
                    "disable" | "allow" | "prefer" => PgTlsMode::Off,
                    "require" => PgTlsMode::Require,
                    "verify-ca" => PgTlsMode::VerifyCa,
                    "verify-full" => PgTlsMode::VerifyFull,
                    other => {
                        return Err(format!(
                            "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                        ))
                    }
                };
                Ok(true)
            }
            "sslrootcert" => {
                root = Some(PathBuf::from(value));
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
                    if !take(k, &v)? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        // key=value form; values with spaces (quoted) are kept as they are.
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            match word.split_once('=') {
                Some((k, v)) if take(k, v.trim_matches('\''))? => {}
                _ => kept.push(word),
            }
        }
        kept.join(" ")
    };
    Ok((rest, mode, root))
}

/// `sslmode=require`: encryption against eavesdropping, no check of who
/// the server is (libpq's meaning). The handshake's signatures are still
/// verified.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain is checked, the name is not.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_the_url() {
        let (rest, mode, root) = split_tls_params(
            "postgres://u:p@h1:5432,h2:5433/db?sslmode=verify-full&target_session_attrs=read-write&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p@h1:5432,h2:5433/db?target_session_attrs=read-write"
        );
        assert_eq!(mode, PgTlsMode::VerifyFull);
        assert_eq!(root, Some(PathBuf::from("/etc/ca.pem")));

        let (rest, mode, root) = split_tls_params("postgres://u@h/db?sslmode=require").unwrap();
        assert_eq!(
            (rest.as_str(), mode, root),
            ("postgres://u@h/db", PgTlsMode::Require, None)
        );
        for off in ["disable", "allow", "prefer"] {
            let url = format!("postgres://h/db?sslmode={off}");
            assert_eq!(split_tls_params(&url).unwrap().1, PgTlsMode::Off, "{off}");
        }
        assert_eq!(
            split_tls_params("postgres://h/db").unwrap(),
            ("postgres://h/db".into(), PgTlsMode::Off, None)
        );
        let (rest, mode, _) =
            split_tls_params("host=db user=app sslmode=verify-ca sslrootcert=/r.pem").unwrap();
        assert_eq!(
            (rest.as_str(), mode),
            ("host=db user=app", PgTlsMode::VerifyCa)
        );
        assert!(split_tls_params("postgres://h/db?sslmode=verify").is_err());

        // verify-* needs a root; require with one verifies the chain.
        assert!(PgTls::new(PgTlsMode::VerifyFull, None).is_err());
        assert!(PgTls::new(PgTlsMode::Off, None).unwrap().is_none());
        assert_eq!(
            PgTls::new(PgTlsMode::Require, None)
                .unwrap()
                .unwrap()
                .mode(),
            PgTlsMode::Require
        );
        assert!(
            PgTls::new(PgTlsMode::Require, Some(Path::new("/nonexistent.pem")))
                .unwrap_err()
                .contains("/nonexistent.pem")
        );
    }
}
