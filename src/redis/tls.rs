//! TLS to Redis (`rediss://`, issue #14): [`RedisTls`], what every
//! connection to Redis is wrapped in when the URL asks for it — the per-core
//! pipelined connections and the mirror readers (`supervisor`, through
//! `monoio-rustls`), the blocking client (`blocking`, through rustls's own
//! `StreamOwned`) and the connections to the sentinels.
//!
//! rustls with the aws-lc-rs provider the project already carries; the
//! server's certificate is checked against `redis.tls_ca_file` (or the
//! system's roots), for the name the connection was made to (a host name or
//! an IP address, or `redis.tls_server_name`). A client certificate is sent
//! when `redis.tls_cert_file` and `redis.tls_key_file` are set (Redis's
//! `tls-auth-clients yes`).
//!
//! Owns: the rustls client configuration and the choice of server name.
//! Never imports anything of the crate outside `redis`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// How connections to Redis are encrypted and checked.
pub struct RedisTls {
    config: Arc<ClientConfig>,
    /// The name every server's certificate must carry, instead of the host
    /// connected to (`redis.tls_server_name`).
    server_name: Option<ServerName<'static>>,
    /// What was configured, for logs: never key material.
    described: String,
}

impl PartialEq for RedisTls {
    fn eq(&self, other: &RedisTls) -> bool {
        self.described == other.described
    }
}

impl Eq for RedisTls {}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisTls({})", self.described)
    }
}

impl RedisTls {
    /// A configuration that trusts `ca_file` (PEM, one or more
    /// certificates) or, without one, the system's roots; presents
    /// `cert_file` and `key_file` (PEM) when both are given; and checks
    /// every server's certificate for `server_name` when given, for the
    /// host connected to otherwise. The error names the file and the reason.
    pub fn new(
        ca_file: Option<&Path>,
        cert_file: Option<&Path>,
        key_file: Option<&Path>,
        server_name: Option<&str>,
    ) -> Result<RedisTls, String> {
        let mut roots = RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("{}: cannot read certificates: {e}", path.display()))?;
                if certs.is_empty() {
                    return Err(format!("{}: no certificate in it", path.display()));
                }
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    // A system root rustls cannot use is skipped, as every
                    // rustls client does.
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err(
                        "no CA certificate: the system has none (install ca-certificates) and redis.tls_ca_file is not set"
                            .into(),
                    );
                }
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots);
        let config = match (cert_file, key_file) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("{}: cannot read certificates: {e}", cert.display()))?;
                if chain.is_empty() {
                    return Err(format!("{}: no certificate in it", cert.display()));
                }
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("{}: cannot read a private key: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("client certificate and key: {e}"))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(
                    "a client certificate needs both redis.tls_cert_file and redis.tls_key_file"
                        .into(),
                )
            }
        };
        let server_name = server_name
            .map(|n| {
                ServerName::try_from(n.to_owned())
                    .map_err(|_| format!("redis.tls_server_name {n:?} is not a host name"))
            })
            .transpose()?;
        let described = format!(
            "CA {}, client certificate {}, server name {}",
            ca_file.map_or("from the system".into(), |p| p.display().to_string()),
            cert_file.map_or("none".into(), |p| p.display().to_string()),
            server_name
                .as_ref()
                .map_or("the host connected to".into(), |n| format!("{n:?}")),
        );
        Ok(RedisTls {
            config: Arc::new(config),
            server_name,
            described,
        })
    }

    /// The rustls configuration, shared by every connection.
    pub(super) fn client_config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// The name `host`'s certificate must carry.
    pub(super) fn server_name(&self, host: &str) -> Result<ServerName<'static>, String> {
        if let Some(n) = &self.server_name {
            return Ok(n.clone());
        }
        ServerName::try_from(host.to_owned())
            .map_err(|_| format!("{host:?} is not a name a certificate can be checked for"))
    }
}

/// Why a TLS handshake failed, in words, when the error came from rustls
/// (a certificate that does not match, an unknown CA, a refused client
/// certificate): a misconfiguration rather than an outage.
pub(super) fn tls_failure(e: &std::io::Error) -> Option<String> {
    let inner = e.get_ref()?;
    inner
        .downcast_ref::<rustls::Error>()
        .map(|r| format!("TLS: {r}"))
}

#[cfg(test)]
pub(crate) mod testing {
    //! Certificates for the TLS tests, made here (rcgen): nothing secret is
    //! committed. A CA, a server certificate for `localhost` and
    //! `127.0.0.1`, a client certificate, and a second, unrelated CA.

    use std::path::PathBuf;

    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    /// The files, in a directory removed on drop.
    pub struct TlsFiles {
        pub dir: PathBuf,
    }

    impl TlsFiles {
        pub fn new() -> TlsFiles {
            let dir = std::env::temp_dir().join(format!(
                "tokend-tls-test-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let ca = |name: &str| {
                let key = KeyPair::generate().unwrap();
                let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
                params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                params
                    .distinguished_name
                    .push(rcgen::DnType::CommonName, name);
                let cert = params.self_signed(&key).unwrap();
                (cert, Issuer::new(params, key))
            };
            let (ca_cert, issuer) = ca("tokend test CA");
            let (other_cert, _) = ca("another CA");
            let leaf = |names: Vec<String>, file: &str| {
                let key = KeyPair::generate().unwrap();
                let params = CertificateParams::new(names).unwrap();
                let cert = params.signed_by(&key, &issuer).unwrap();
                std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
                std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
            };
            leaf(vec!["localhost".into(), "127.0.0.1".into()], "server");
            leaf(vec!["tokend-client".into()], "client");
            std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
            std::fs::write(dir.join("other-ca.pem"), other_cert.pem()).unwrap();
            TlsFiles { dir }
        }

        pub fn path(&self, name: &str) -> PathBuf {
            self.dir.join(name)
        }

        /// `redis-server` arguments: TLS only, on `port`; client
        /// certificates required or not.
        pub fn redis_args(&self, port: u16, require_client_cert: bool) -> Vec<String> {
            let p = |n: &str| self.path(n).display().to_string();
            vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                p("server.pem"),
                "--tls-key-file".into(),
                p("server.key"),
                "--tls-ca-cert-file".into(),
                p("ca.pem"),
                "--tls-auth-clients".into(),
                if require_client_cert { "yes" } else { "no" }.into(),
            ]
        }
    }

    impl Drop for TlsFiles {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use super::super::testutil::*;
    use super::super::{BlockingRedis, ConnectError, RedisConn, RedisTarget};
    use super::testing::TlsFiles;
    use super::*;

    struct TlsRedis(Child, u16);

    impl TlsRedis {
        fn start(files: &TlsFiles, require_client_cert: bool) -> TlsRedis {
            let port = free_port();
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(files.redis_args(port, require_client_cert))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed");
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "redis-server (TLS) did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            TlsRedis(child, port)
        }
    }

    impl Drop for TlsRedis {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn target(port: u16, host: &str, tls: RedisTls) -> RedisTarget {
        let mut t = RedisTarget::parse(&format!("redis://{host}:{port}/0")).unwrap();
        t.set_tls(Some(std::sync::Arc::new(tls)));
        t
    }

    #[test]
    fn rediss_with_a_ca_and_a_client_certificate() {
        let files = TlsFiles::new();
        let server = TlsRedis::start(&files, true);
        let ca = files.path("ca.pem");
        let with_client = || {
            RedisTls::new(
                Some(&ca),
                Some(&files.path("client.pem")),
                Some(&files.path("client.key")),
                None,
            )
            .unwrap()
        };

        // The blocking client, by IP address and by name.
        for host in ["127.0.0.1", "localhost"] {
            let t = target(server.1, host, with_client());
            let mut c = BlockingRedis::connect(&t, Duration::from_secs(2)).unwrap();
            c.query(::redis::cmd("SET").arg("tls").arg(host)).unwrap();
            assert_eq!(
                c.query(::redis::cmd("GET").arg("tls")).unwrap().as_str(),
                Some(host)
            );
            assert!(t.to_string().starts_with("rediss://"), "{t}");
        }

        // The per-core connection, on both drivers.
        let port = server.1;
        let client_tls = with_client;
        let t = target(port, "127.0.0.1", client_tls());
        on_both_drivers(|driver| {
            let t = t.clone();
            async move {
                let conn = RedisConn::new(t, Duration::from_secs(2));
                assert!(
                    conn.wait_connected(Duration::from_secs(5)).await,
                    "{driver}"
                );
                for i in 0..100u32 {
                    conn.query(::redis::cmd("SET").arg("k").arg(i))
                        .await
                        .unwrap();
                }
                let r = conn.query(::redis::cmd("GET").arg("k")).await.unwrap();
                assert_eq!(r.as_int(), Some(99), "{driver}");
            }
        });

        // Bad input, each said as what it is.
        let expect_tls_error = |t: RedisTarget, what: &str| match BlockingRedis::connect_explained(
            &t,
            Duration::from_secs(2),
        ) {
            Err(e @ ConnectError::Tls(..)) => {
                assert!(e.is_misconfiguration(), "{e}");
                e.to_string()
            }
            Err(e) => panic!("{what}: not a TLS error: {e}"),
            Ok(_) => panic!("{what}: connected"),
        };
        // A CA the server's certificate does not chain to.
        let other = RedisTls::new(Some(&files.path("other-ca.pem")), None, None, None).unwrap();
        let e = expect_tls_error(target(port, "127.0.0.1", other), "unknown CA");
        assert!(e.contains("certificate"), "{e}");
        // A name the certificate does not carry.
        let wrong_name = RedisTls::new(
            Some(&ca),
            Some(&files.path("client.pem")),
            Some(&files.path("client.key")),
            Some("redis.example.com"),
        )
        .unwrap();
        let e = expect_tls_error(target(port, "127.0.0.1", wrong_name), "wrong name");
        assert!(e.contains("certificate"), "{e}");
        // No client certificate where the server requires one.
        let no_client = RedisTls::new(Some(&ca), None, None, None).unwrap();
        match BlockingRedis::connect_explained(
            &target(port, "127.0.0.1", no_client),
            Duration::from_secs(2),
        ) {
            Err(_) => {}
            Ok(_) => panic!("connected without the required client certificate"),
        }

        // Files that are not what they should be.
        assert!(
            RedisTls::new(Some(&files.path("nope.pem")), None, None, None)
                .unwrap_err()
                .contains("nope.pem")
        );
        assert!(
            RedisTls::new(Some(&files.path("server.key")), None, None, None)
                .unwrap_err()
                .contains("server.key")
        );
        assert!(
            RedisTls::new(Some(&ca), Some(&files.path("client.pem")), None, None)
                .unwrap_err()
                .contains("tls_key_file")
        );
    }
}
