//! TLS of PostgreSQL connections: rustls with the ring provider, no OpenSSL.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use store_core::{Error, Result};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{PostgresConfig, TlsMode};

/// Whether every host the URL names is this machine: a loopback address, `localhost`, or a
/// Unix socket. Only then is plain TCP the default.
fn all_loopback(pg: &tokio_postgres::Config) -> bool {
    let hosts = pg.get_hosts();
    // `hostaddr` is where the connection really goes, whatever `host` says.
    let addrs_loopback = pg.get_hostaddrs().iter().all(|a| a.is_loopback());
    !hosts.is_empty()
        && addrs_loopback
        && hosts.iter().all(|h| match h {
            Host::Tcp(name) => {
                name == "localhost"
                    || name
                        .trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            #[cfg(unix)]
            Host::Unix(_) => true,
        })
}

/// The TLS mode in force: the configured one; else the URL's own `sslmode=require` or
/// `sslmode=disable`; else by where the server is. `ca_file` is for `verify-full` only.
pub(crate) fn mode(config: &PostgresConfig, pg: &tokio_postgres::Config) -> Result<TlsMode> {
    let mode = match (config.tls, pg.get_ssl_mode()) {
        (Some(mode), _) => mode,
        (None, SslMode::Require) => TlsMode::Require,
        (None, SslMode::Disable) => TlsMode::Disable,
        (None, _) if all_loopback(pg) => TlsMode::Disable,
        (None, _) => TlsMode::VerifyFull,
    };
    if config.ca_file.is_some() && mode != TlsMode::VerifyFull {
        return Err(Error::invalid(format!(
            "ca_file: only verify-full checks certificates, and tls is {}",
            match mode {
                TlsMode::Disable => "disable",
                _ => "require",
            }
        ))
        .with_field("ca_file"));
    }
    Ok(mode)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The connector of `mode` (none for `disable`), with `pg`'s own TLS setting matched to it: a
/// server that cannot speak TLS then fails the connection instead of falling back to plain TCP.
pub(crate) fn connector(
    mode: TlsMode,
    config: &PostgresConfig,
    pg: &mut tokio_postgres::Config,
) -> Result<Option<MakeRustlsConnect>> {
    let builder = || {
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::internal(format!("tls: no usable protocol version: {e}")))
    };
    let client = match mode {
        TlsMode::Disable => {
            pg.ssl_mode(SslMode::Disable);
            return Ok(None);
        }
        TlsMode::Require => builder()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
            .with_no_client_auth(),
        TlsMode::VerifyFull => builder()?
            .with_root_certificates(roots(config)?)
            .with_no_client_auth(),
    };
    pg.ssl_mode(SslMode::Require);
    Ok(Some(MakeRustlsConnect::new(client)))
}

/// The CAs `verify-full` trusts: `ca_file`'s certificates, else the system's.
fn roots(config: &PostgresConfig) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match &config.ca_file {
        Some(path) => {
            let bad = |why: String| {
                Error::invalid(format!("ca_file {path:?}: {why}")).with_field("ca_file")
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(format!("cannot read it: {e}")))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(bad("holds no certificate".to_owned()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("a certificate is not usable as a CA: {e}")))?;
            }
        }
        None => {
            // The platform's store: /etc/ssl/certs and friends on Linux.
            let found = rustls_native_certs::load_native_certs().certs;
            if found.is_empty() {
                return Err(Error::invalid(
                    "tls verify-full: the system has no CA certificates; give ca_file",
                )
                .with_field("ca_file"));
            }
            roots.add_parsable_certificates(found);
        }
    }
    Ok(roots)
}

/// `require`: any certificate is accepted (the connection is encrypted, the peer unchecked);
/// the handshake's signatures are still verified with the provider's algorithms.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(url: &str) -> tokio_postgres::Config {
        url.parse().unwrap()
    }

    #[test]
    fn loopback_hosts_default_to_plain_tcp_and_others_to_verify_full() {
        let c = PostgresConfig::new("x");
        for url in [
            "postgres://u@127.0.0.1/db",
            "postgres://u@localhost:5432/db",
            "postgres://u@[::1]/db",
            "host=/var/run/postgresql user=u",
        ] {
            assert_eq!(mode(&c, &pg(url)).unwrap(), TlsMode::Disable, "{url}");
        }
        for url in [
            "postgres://u@db.example.com/db",
            "postgres://u@10.0.0.5/db",
            "postgres://u@localhost/db?hostaddr=10.1.2.3",
        ] {
            assert_eq!(mode(&c, &pg(url)).unwrap(), TlsMode::VerifyFull, "{url}");
        }
        let forced = c.clone().tls(TlsMode::Require);
        let local = pg("postgres://u@127.0.0.1/db");
        assert_eq!(mode(&forced, &local).unwrap(), TlsMode::Require);
        // The URL's own sslmode is kept when the entry says nothing.
        let url = "postgres://u@127.0.0.1/db?sslmode=require";
        assert_eq!(mode(&c, &pg(url)).unwrap(), TlsMode::Require);
        let url = "postgres://u@db.example.com/db?sslmode=disable";
        assert_eq!(mode(&c, &pg(url)).unwrap(), TlsMode::Disable);
        // A CA file with a mode that checks nothing is a mistake, said so.
        let e = mode(&forced.ca_file("ca.pem"), &local).unwrap_err();
        assert_eq!(e.field(), Some("ca_file"));
    }

    #[test]
    fn a_bad_ca_file_is_invalid_and_named() {
        let c = PostgresConfig::new("x").ca_file("/nonexistent/ca.pem");
        let e = roots(&c).unwrap_err();
        assert_eq!(
            (e.kind(), e.field()),
            (store_core::ErrorKind::Invalid, Some("ca_file"))
        );
        assert!(e.message().contains("/nonexistent/ca.pem"), "{e}");
    }
}
