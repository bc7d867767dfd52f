//! Connections to a PostgreSQL that is not agencyflow's own (the hosted Supabase project
//! `agencyflow import supabase --from` reads): libpq's `sslmode` and `sslrootcert` in the
//! connection string, over rustls.
//!
//! tokio-postgres itself knows only `sslmode=disable|prefer|require` and none of the
//! certificate settings, so the `ssl*` settings are taken out of the string here, the rest is
//! parsed by tokio-postgres, and the TLS client is configured the way libpq documents
//! ("SSL Support", table "SSL Mode Descriptions"):
//!
//! | sslmode | TLS | server certificate checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `allow` | only when the plain connection fails | no |
//! | `prefer` (the default) | when the server offers it | no |
//! | `require` | always | no (but: with an `sslrootcert`, as `verify-ca`) |
//! | `verify-ca` | always | signed by a trusted CA |
//! | `verify-full` | always | signed by a trusted CA and issued for the host name |
//!
//! The trusted CAs are `sslrootcert=FILE` (PEM), else `~/.postgresql/root.crt` as libpq; when
//! that does not exist either, `verify-ca`/`verify-full` use the Mozilla roots of
//! `webpki-roots` (libpq would refuse; PostgreSQL 16's `sslrootcert=system` is the same thing
//! spelt out, and is accepted too: it takes the operating system's store, and as in libpq it
//! implies `verify-full`). Client certificates (`sslcert`/`sslkey`) are not supported and say
//! so. `PGSSLMODE`/`PGSSLROOTCERT` are not read: the string says everything.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::DbError;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl std::str::FromStr for SslMode {
    type Err = DbError;
    fn from_str(s: &str) -> Result<Self, DbError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(DbError::Other(format!(
                    "sslmode={other}: expected disable, allow, prefer, require, verify-ca or verify-full"
                )))
            }
        })
    }
}

/// Where the trusted CAs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// `sslrootcert=FILE` (or libpq's default `~/.postgresql/root.crt`).
    File(PathBuf),
    /// `sslrootcert=system`: the operating system's store.
    System,
    /// Nothing given and no default file: the Mozilla roots (webpki-roots).
    Mozilla,
}

/// A connection string with its TLS settings taken apart.
#[derive(Debug, Clone)]
pub struct SslConnectString {
    /// What tokio-postgres parses (the `ssl*` settings removed).
    pub config: Config,
    pub mode: SslMode,
    /// Only for the modes that check the certificate.
    pub roots: Option<RootCerts>,
}

/// The `ssl*` settings this module handles (taken out of the string).
const SSL_KEYS: &[&str] = &["sslmode", "sslrootcert"];
/// libpq settings that would silently do nothing: refused.
const UNSUPPORTED: &[&str] = &["sslcert", "sslkey", "sslpassword", "sslcrl", "sslcrldir"];

impl SslConnectString {
    /// Parses a `postgres://` URL or a `key=value` connection string, `home` being where
    /// libpq's default `~/.postgresql/root.crt` is looked for.
    pub fn parse(s: &str, home: Option<&Path>) -> Result<Self, DbError> {
        let (rest, ssl) = if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            split_url(s)?
        } else {
            split_conninfo(s)?
        };
        let mut mode = None;
        let mut rootcert = None;
        for (k, v) in ssl {
            if UNSUPPORTED.contains(&k.as_str()) {
                return Err(DbError::Other(format!(
                    "{k}: client certificates are not supported (only sslmode and sslrootcert)"
                )));
            }
            match k.as_str() {
                "sslmode" => mode = Some(v.parse::<SslMode>()?),
                _ => rootcert = Some(v),
            }
        }
        let config: Config = rest
            .parse()
            .map_err(|e| DbError::Other(format!("connection string: {e}")))?;
        let default_file = home
            .map(|h| h.join(".postgresql/root.crt"))
            .filter(|p| p.is_file());
        let roots = match rootcert.as_deref() {
            Some("system") => Some(RootCerts::System),
            Some(f) => Some(RootCerts::File(PathBuf::from(f))),
            None => default_file.map(RootCerts::File),
        };
        let mode = match (mode, &roots) {
            // libpq: "sslrootcert=system" is only allowed with verify-full (its default).
            (None, Some(RootCerts::System)) => SslMode::VerifyFull,
            (Some(m), Some(RootCerts::System)) if m != SslMode::VerifyFull => {
                return Err(DbError::Other(format!(
                    "weak sslmode \"{}\" may not be used with sslrootcert=system (use \"verify-full\")",
                    mode_name(m)
                )))
            }
            // libpq: "if a root CA file exists, the behavior of sslmode=require will be the
            // same as that of verify-ca".
            (Some(SslMode::Require), Some(RootCerts::File(_))) => SslMode::VerifyCa,
            (m, _) => m.unwrap_or(SslMode::Prefer),
        };
        let roots = match mode {
            SslMode::VerifyCa | SslMode::VerifyFull => Some(roots.unwrap_or(RootCerts::Mozilla)),
            _ => None,
        };
        Ok(SslConnectString {
            config,
            mode,
            roots,
        })
    }

    /// The rustls client for this mode (None for `disable`).
    fn tls(&self) -> Result<Option<MakeRustlsConnect>, DbError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| DbError::Other(format!("TLS: {e}")))?;
        let config = match (self.mode, &self.roots) {
            (SslMode::Disable, _) => return Ok(None),
            (SslMode::VerifyCa | SslMode::VerifyFull, Some(roots)) => {
                let store = Arc::new(load_roots(roots)?);
                let verifier = WebPkiServerVerifier::builder_with_provider(store, provider)
                    .build()
                    .map_err(|e| DbError::Other(format!("TLS: {e}")))?;
                let verifier: Arc<dyn ServerCertVerifier> = if self.mode == SslMode::VerifyCa {
                    Arc::new(ChainOnly(verifier))
                } else {
                    verifier
                };
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(verifier)
                    .with_no_client_auth()
            }
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
                .with_no_client_auth(),
        };
        Ok(Some(MakeRustlsConnect::new(config)))
    }

    /// Connects and drives the connection in the background.
    pub async fn connect(&self) -> Result<Client, DbError> {
        let described = |e: tokio_postgres::Error| -> DbError {
            // tokio-postgres shows "error performing TLS handshake" and keeps rustls's
            // reason as the source: both are shown.
            let mut chain = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                chain.push_str(": ");
                chain.push_str(&s.to_string());
                source = s.source();
            }
            match DbError::from(e) {
                DbError::Postgres(p) => DbError::Postgres(p),
                DbError::Unavailable(_) | DbError::Other(_) => {
                    let m = chain;
                    let hint = if m.contains("UnknownIssuer") || m.contains("unknown issuer") {
                        match &self.roots {
                            Some(RootCerts::File(f)) => format!(": the server's certificate is not signed by a CA in sslrootcert={}", f.display()),
                            _ => ": the server's certificate is not signed by a trusted CA (give its CA as sslrootcert=FILE)".into(),
                        }
                    } else if m.contains("NotValidForName") || m.contains("not valid for name") {
                        ": the server's certificate is not issued for this host name (verify-full checks it)".into()
                    } else if m.contains("does not support TLS") {
                        ": the server does not offer TLS".into()
                    } else {
                        String::new()
                    };
                    DbError::Unavailable(format!("{m} (sslmode={}){hint}", mode_name(self.mode)))
                }
            }
        };
        let mut config = self.config.clone();
        let Some(tls) = self.tls()? else {
            config.ssl_mode(PgSslMode::Disable);
            return spawn(
                config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(described)?,
            );
        };
        match self.mode {
            SslMode::Allow => {
                config.ssl_mode(PgSslMode::Disable);
                match config.connect(tokio_postgres::NoTls).await {
                    Ok(c) => return spawn(c),
                    Err(e) => {
                        tracing::debug!(error = %e, "sslmode=allow: plain connection failed, trying TLS")
                    }
                }
                config.ssl_mode(PgSslMode::Require);
            }
            SslMode::Prefer => {
                config.ssl_mode(PgSslMode::Prefer);
            }
            _ => {
                config.ssl_mode(PgSslMode::Require);
            }
        }
        spawn(config.connect(tls).await.map_err(described)?)
    }
}

fn spawn<S, T>(
    (client, conn): (Client, tokio_postgres::Connection<S, T>),
) -> Result<Client, DbError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection closed");
        }
    });
    Ok(client)
}

/// Connects to `url` honouring libpq's `sslmode`/`sslrootcert` (see the module).
pub async fn connect_with_libpq_tls(url: &str) -> Result<Client, DbError> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    SslConnectString::parse(url, home.as_deref())?
        .connect()
        .await
}

fn mode_name(m: SslMode) -> &'static str {
    match m {
        SslMode::Disable => "disable",
        SslMode::Allow => "allow",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyCa => "verify-ca",
        SslMode::VerifyFull => "verify-full",
    }
}

fn load_roots(roots: &RootCerts) -> Result<RootCertStore, DbError> {
    let mut store = RootCertStore::empty();
    match roots {
        RootCerts::Mozilla => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        RootCerts::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(DbError::Other(format!(
                    "sslrootcert=system: no certificates in the system store ({:?})",
                    found.errors
                )));
            }
        }
        RootCerts::File(path) => {
            let shown = path.display();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| DbError::Other(format!("sslrootcert={shown}: {e}")))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| DbError::Other(format!("sslrootcert={shown}: {e}")))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(DbError::Other(format!(
                    "sslrootcert={shown}: no PEM certificate in the file"
                )));
            }
        }
    }
    Ok(store)
}

/// `verify-ca`: the chain must lead to a trusted CA; the host name is not checked. (rustls
/// checks the chain first and the name last, so a name mismatch means the chain was good.)
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer`/`require`/`allow`: encrypted, the certificate not checked (libpq's behaviour;
/// the handshake's signatures are still verified, so the key is the certificate's).
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `postgres://...?a=b&sslmode=x`: the URL without the ssl settings, and those settings
/// (percent-decoded).
fn split_url(s: &str) -> Result<(String, Vec<(String, String)>), DbError> {
    let Some((base, query)) = s.split_once('?') else {
        return Ok((s.to_string(), Vec::new()));
    };
    let mut keep = Vec::new();
    let mut ssl = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(k)?;
        if SSL_KEYS.contains(&key.as_str()) || UNSUPPORTED.contains(&key.as_str()) {
            ssl.push((key, percent_decode(v)?));
        } else {
            keep.push(pair);
        }
    }
    Ok(if keep.is_empty() {
        (base.to_string(), ssl)
    } else {
        (format!("{base}?{}", keep.join("&")), ssl)
    })
}

fn percent_decode(s: &str) -> Result<String, DbError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| DbError::Other(format!("connection string: bad escape in {s:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| DbError::Other(format!("connection string: {s:?} is not UTF-8")))
}

/// `key=value key='quoted \' value'`: the string without the ssl settings (re-quoted), and
/// those settings.
fn split_conninfo(s: &str) -> Result<(String, Vec<(String, String)>), DbError> {
    let bad = |what: &str| DbError::Other(format!("connection string: {what}"));
    let mut keep = Vec::new();
    let mut ssl = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(bad(&format!("expected `=` after `{key}`")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(bad("unterminated quoted value")),
                    Some('\'') => break,
                    Some('\\') => value.push(chars.next().ok_or_else(|| bad("trailing `\\`"))?),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next().ok_or_else(|| bad("trailing `\\`"))?);
                } else {
                    value.push(c);
                }
            }
        }
        if SSL_KEYS.contains(&key.as_str()) || UNSUPPORTED.contains(&key.as_str()) {
            ssl.push((key, value));
        } else {
            keep.push(format!(
                "{key}='{}'",
                value.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        }
    }
    Ok((keep.join(" "), ssl))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> SslConnectString {
        SslConnectString::parse(s, None).unwrap()
    }

    #[test]
    fn sslmode_and_sslrootcert_come_out_of_urls_and_conninfo() {
        let c = parse("postgres://postgres:p%40ss@db.abc.supabase.co:5432/postgres?sslmode=verify-full&sslrootcert=%2Ftmp%2Fprod-ca-2021.crt&application_name=x");
        assert_eq!(c.mode, SslMode::VerifyFull);
        assert_eq!(
            c.roots,
            Some(RootCerts::File("/tmp/prod-ca-2021.crt".into()))
        );
        assert_eq!(c.config.get_password(), Some(&b"p@ss"[..]));
        assert_eq!(c.config.get_application_name(), Some("x"));

        let c = parse("host=db.x port=6543 password='a b\\'c' sslmode=require dbname=postgres");
        assert_eq!(c.mode, SslMode::Require);
        assert_eq!(c.roots, None);
        assert_eq!(c.config.get_password(), Some(&b"a b'c"[..]));
        assert_eq!(c.config.get_dbname(), Some("postgres"));

        // libpq's defaults and implications.
        assert_eq!(parse("postgres://u@h/db").mode, SslMode::Prefer);
        let c = parse("host=h sslmode=require sslrootcert=/ca.pem");
        assert_eq!(
            c.mode,
            SslMode::VerifyCa,
            "require + a root file = verify-ca"
        );
        let c = parse("host=h sslrootcert=system");
        assert_eq!(
            (c.mode, c.roots),
            (SslMode::VerifyFull, Some(RootCerts::System))
        );
        assert_eq!(
            parse("postgres://u@h/db?sslmode=verify-full").roots,
            Some(RootCerts::Mozilla)
        );
        assert!(
            SslConnectString::parse("host=h sslmode=require sslrootcert=system", None)
                .unwrap_err()
                .to_string()
                .contains("weak sslmode")
        );
        assert!(SslConnectString::parse("host=h sslmode=on", None).is_err());
        assert!(
            SslConnectString::parse("postgres://h/db?sslcert=c.pem", None)
                .unwrap_err()
                .to_string()
                .contains("client certificates")
        );

        // ~/.postgresql/root.crt counts as libpq's default root file.
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".postgresql")).unwrap();
        std::fs::write(home.path().join(".postgresql/root.crt"), "x").unwrap();
        let c = SslConnectString::parse("host=h sslmode=require", Some(home.path())).unwrap();
        assert_eq!(c.mode, SslMode::VerifyCa);
    }
}
