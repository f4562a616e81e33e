//! TLS termination with rustls (the `ring` crypto provider).
//!
//! - At startup, [`Tls::from_config`] loads the certificate chain, the private key (decrypting
//!   an encrypted PKCS#8 key with `--ssl-keyfile-password`) and the client CA certificates,
//!   so a bad file stops the server before it serves anything.
//! - Per connection, [`Tls::accept`] runs the handshake in the connection's own task on the
//!   I/O thread, under a deadline, and gathers what the ASGI `tls` scope extension reports into
//!   a plain [`TlsInfo`]. Python objects are made from it on the loop thread only.
//!
//! TLS 1.2 and 1.3 are offered, and through ALPN the HTTP versions served (`h2`, `http/1.1`). Client certificates follow Python's
//! `ssl.CERT_*` values as uvicorn uses them: 0 never asks for one, 1 asks and verifies one if
//! sent, 2 requires one. A certificate that fails verification fails the handshake, so
//! `client_cert_error` is always None.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use pkcs8::der::pem::{self, LineEnding};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use x509_cert::der::Decode;

use crate::handoff::head::TlsInfo;
use crate::net::SHUTDOWN_GRACE;

/// Python's `ssl.CERT_NONE`, `ssl.CERT_OPTIONAL`, `ssl.CERT_REQUIRED`.
pub const CERT_NONE: u8 = 0;
pub const CERT_OPTIONAL: u8 = 1;
pub const CERT_REQUIRED: u8 = 2;

/// The TLS settings, as `rsgi.Config` names them.
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    pub certfile: String,
    pub keyfile: Option<String>,
    pub password: Option<String>,
    pub ca_certs: Option<String>,
    pub cert_reqs: u8,
}

/// The server side of TLS: the acceptor every connection shares.
pub struct Tls {
    acceptor: TlsAcceptor,
    server_cert: Arc<str>,
    handshake_timeout: Duration,
}

impl Tls {
    /// Loads certificates and keys; `alpn` lists the protocols offered, preferred first. The
    /// error is a one-line message naming the file at fault.
    pub fn from_config(
        settings: &TlsSettings,
        handshake_timeout: Duration,
        alpn: Vec<Vec<u8>>,
    ) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = load_certs(&settings.certfile)?;
        let keyfile = settings.keyfile.as_deref().unwrap_or(&settings.certfile);
        let key = load_key(keyfile, settings.password.as_deref())?;

        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = if settings.cert_reqs == CERT_NONE {
            builder.with_no_client_auth()
        } else if settings.cert_reqs > CERT_REQUIRED {
            return Err(format!(
                "TLS: --ssl-cert-reqs must be 0, 1 or 2, got {}",
                settings.cert_reqs
            ));
        } else {
            let Some(ca_certs) = &settings.ca_certs else {
                return Err("TLS: --ssl-cert-reqs 1 or 2 needs --ssl-ca-certs".into());
            };
            let mut roots = RootCertStore::empty();
            for cert in load_certs(ca_certs)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("TLS: bad CA certificate in {ca_certs}: {e}"))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = if settings.cert_reqs == CERT_OPTIONAL {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("TLS: cannot use the CA certificates in {ca_certs}: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        };
        let server_cert = pem_certificate(&certs[0]);
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| format!("TLS: certificate and key do not fit together: {e}"))?;
        config.alpn_protocols = alpn;
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            server_cert: server_cert.into(),
            handshake_timeout,
        })
    }

    /// Runs the handshake, giving up after the handshake timeout. A shutdown does not cut it
    /// short at once: the connection was taken from a listening socket that other workers
    /// may share, and none of them can serve it now. It gets [`SHUTDOWN_GRACE`] more (within
    /// the timeout), then its first request the same grace (see `http::conn`).
    pub async fn accept<S>(
        &self,
        stream: S,
        shutdown: &mut watch::Receiver<bool>,
    ) -> io::Result<(TlsStream<S>, TlsInfo)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let handshake = self.acceptor.accept(stream);
        tokio::pin!(handshake);
        let limit = tokio::time::sleep(self.handshake_timeout);
        tokio::pin!(limit);
        let mut stopping = false;
        let stream = loop {
            tokio::select! {
                r = &mut handshake => break r?,
                _ = &mut limit => {
                    let why = if stopping { "shutting down" } else { "handshake timed out" };
                    return Err(io::Error::new(io::ErrorKind::TimedOut, why));
                }
                _ = shutdown.wait_for(|&stop| stop), if !stopping => {
                    stopping = true;
                    let cut = tokio::time::Instant::now() + SHUTDOWN_GRACE;
                    if cut < limit.deadline() {
                        limit.as_mut().reset(cut);
                    }
                }
            }
        };
        let info = self.describe(stream.get_ref().1);
        Ok((stream, info))
    }

    fn describe(&self, conn: &rustls::ServerConnection) -> TlsInfo {
        let peer = conn.peer_certificates().unwrap_or(&[]);
        TlsInfo {
            server_cert: self.server_cert.clone(),
            client_cert_chain: peer.iter().map(pem_certificate).collect(),
            client_cert_name: peer.first().and_then(subject_name),
            tls_version: conn.protocol_version().map(|v| v.into()),
            cipher_suite: conn.negotiated_cipher_suite().map(|s| s.suite().into()),
        }
    }
}

fn read_file(path: &str, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("TLS: cannot read {what} {path}: {e}"))
}

fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = read_file(path, "certificate file")?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("TLS: bad certificate file {path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("TLS: no PEM certificate in {path}"));
    }
    Ok(certs)
}

/// The private key of `path`: plain PKCS#8, PKCS#1 (RSA) or SEC1 (EC), or encrypted PKCS#8
/// ("ENCRYPTED PRIVATE KEY", decrypted with `password`).
fn load_key(path: &str, password: Option<&str>) -> Result<PrivateKeyDer<'static>, String> {
    let data = read_file(path, "key file")?;
    if let Some(block) = pem_block(&data, "ENCRYPTED PRIVATE KEY") {
        let Some(password) = password else {
            return Err(format!(
                "TLS: the key in {path} is encrypted: give its password with --ssl-keyfile-password"
            ));
        };
        let (_, der) =
            pem::decode_vec(block).map_err(|e| format!("TLS: bad encrypted key in {path}: {e}"))?;
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
            .map_err(|e| format!("TLS: bad encrypted key in {path}: {e}"))?;
        let plain = info
            .decrypt(password)
            .map_err(|e| format!("TLS: cannot decrypt the key in {path} (wrong password?): {e}"))?;
        return Ok(PrivatePkcs8KeyDer::from(plain.as_bytes().to_vec()).into());
    }
    if contains(&data, b"Proc-Type: 4,ENCRYPTED") {
        return Err(format!(
            "TLS: the key in {path} uses OpenSSL's legacy PEM encryption, which rsgi does not \
             read; convert it to encrypted PKCS#8 with `openssl pkcs8 -topk8 -in OLD -out NEW`"
        ));
    }
    PrivateKeyDer::from_pem_slice(&data).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("TLS: no PEM private key in {path}")
        }
        e => format!("TLS: bad key file {path}: {e}"),
    })
}

/// The first PEM block labelled `label`, from its BEGIN line to the end of its END line.
fn pem_block<'a>(data: &'a [u8], label: &str) -> Option<&'a [u8]> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = find(data, begin.as_bytes())?;
    let stop = start + find(&data[start..], end.as_bytes())? + end.len();
    Some(&data[start..stop])
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

/// A DER certificate as PEM text, the way Python's `ssl.DER_cert_to_pem_cert` writes it.
fn pem_certificate(der: &CertificateDer<'_>) -> String {
    // Encoding fails only for lengths beyond any certificate TLS can carry.
    pem::encode_string("CERTIFICATE", LineEnding::LF, der.as_ref()).unwrap_or_default()
}

/// The subject of a certificate as an RFC 4514 string, e.g. `CN=client,O=Example`.
fn subject_name(der: &CertificateDer<'_>) -> Option<String> {
    let cert = x509_cert::Certificate::from_der(der.as_ref()).ok()?;
    Some(cert.tbs_certificate.subject.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_block_finds_the_labelled_block() {
        let data = b"junk\n-----BEGIN A-----\nAAAA\n-----END A-----\n-----BEGIN B-----\nBB\n-----END B-----\n";
        assert_eq!(
            pem_block(data, "B"),
            Some(&b"-----BEGIN B-----\nBB\n-----END B-----"[..])
        );
        assert_eq!(pem_block(data, "C"), None);
    }

    #[test]
    fn pem_certificate_wraps_at_64() {
        let der = CertificateDer::from(vec![0u8; 60]);
        let pem = pem_certificate(&der);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(pem.ends_with("\n-----END CERTIFICATE-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
    }

    #[test]
    fn missing_files_are_named() {
        let settings = TlsSettings {
            certfile: "/nonexistent/cert.pem".into(),
            ..TlsSettings::default()
        };
        let err = Tls::from_config(&settings, Duration::from_secs(1), Vec::new())
            .err()
            .unwrap();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    }
}
