//! TLS trouble in words: a handshake the server or this machine refused is
//! found in a transport error's causes and said as what is wrong and what
//! to do. Such an error does not pass by itself (an authority this machine
//! does not trust, a certificate expired or for another name, an https URL
//! on a plain-HTTP port), so it pauses uploads rather than being retried
//! like network weather.

use std::error::Error as StdError;
use std::time::{Duration, SystemTime};

use rustls::pki_types::UnixTime;
use rustls::{CertificateError, Error as TlsError};

/// What to do when the server's certificate is not trusted.
pub const TRUST_HINT: &str = "add the authority that issued it to the system trust store \
     (update-ca-certificates), or point SSL_CERT_FILE at a PEM bundle that includes it \
     (under systemd, a drop-in: [Service] Environment=SSL_CERT_FILE=/etc/ingestd/ca.pem, \
     which takes a restart); a new authority in the store or in that file takes only a \
     SIGHUP (systemctl reload ingestd)";

/// A TLS failure: the cause in words and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsTrouble {
    pub cause: String,
    pub todo: String,
}

/// The TLS failure among `e`'s causes, if there is one.
pub fn tls_trouble(e: &(dyn StdError + 'static)) -> Option<TlsTrouble> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(tls) = as_tls(err) {
            return Some(describe(tls));
        }
        cur = err.source();
    }
    None
}

/// The TLS failure of a request refused while connecting: nothing of it
/// was sent. (TLS trouble on a connection already up is not this.)
pub(crate) fn refused_handshake(e: &reqwest::Error) -> Option<TlsTrouble> {
    e.is_connect().then(|| tls_trouble(e)).flatten()
}

/// A rustls error, directly or inside `io::Error`s (whose `source()` skips
/// the error each wraps; the connector wraps one in another).
fn as_tls<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a TlsError> {
    let mut err = err;
    // Nested io::Errors are few; the bound only keeps a cycle impossible.
    for _ in 0..8 {
        if let Some(tls) = err.downcast_ref::<TlsError>() {
            return Some(tls);
        }
        let io = err.downcast_ref::<std::io::Error>()?;
        err = io.get_ref()?;
    }
    None
}

fn date(t: &UnixTime) -> String {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(t.as_secs());
    humantime::format_rfc3339_seconds(at).to_string()
}

fn trouble(cause: impl Into<String>, todo: impl Into<String>) -> TlsTrouble {
    TlsTrouble {
        cause: cause.into(),
        todo: todo.into(),
    }
}

fn describe(e: &TlsError) -> TlsTrouble {
    match e {
        TlsError::InvalidCertificate(c) => certificate(c),
        TlsError::InvalidMessage(_)
        | TlsError::InappropriateMessage { .. }
        | TlsError::InappropriateHandshakeMessage { .. }
        | TlsError::PeerSentOversizedRecord => trouble(
            format!("the server does not speak TLS on this port ({e})"),
            "check api.base_url: an https:// URL needs a TLS port (http:// for a plain-HTTP one)",
        ),
        TlsError::AlertReceived(alert) => trouble(
            format!("the server refused the TLS handshake (alert: {alert:?})"),
            "check api.base_url and the TLS terminator in front of the server",
        ),
        TlsError::PeerIncompatible(why) => trouble(
            format!("the server and ingestd share no TLS version or cipher suite ({why:?})"),
            "the server must offer TLS 1.2 or 1.3 with a modern cipher suite",
        ),
        TlsError::General(why) if why.contains("CA certificates") => trouble(
            format!("this machine trusts no certificate authority ({why})"),
            TRUST_HINT,
        ),
        other => trouble(
            format!("the TLS handshake failed: {other}"),
            "check api.base_url and the TLS terminator in front of the server",
        ),
    }
}

/// A name as rustls presents it (`DnsName("a.example")`), bare.
fn bare_name(n: &str) -> &str {
    n.strip_prefix("DnsName(\"")
        .and_then(|r| r.strip_suffix("\")"))
        .unwrap_or(n)
}

fn certificate(c: &CertificateError) -> TlsTrouble {
    let renew = "renew the server's certificate, or check this machine's clock";
    match c {
        CertificateError::UnknownIssuer => trouble(
            "the server's certificate is issued by an authority this machine does not trust",
            TRUST_HINT,
        ),
        CertificateError::ExpiredContext { not_after, .. } => trouble(
            format!("the server's certificate expired on {}", date(not_after)),
            renew,
        ),
        CertificateError::Expired => trouble("the server's certificate has expired", renew),
        CertificateError::NotValidYetContext { not_before, .. } => trouble(
            format!(
                "the server's certificate is not valid before {}",
                date(not_before)
            ),
            "check this machine's clock",
        ),
        CertificateError::NotValidYet => trouble(
            "the server's certificate is not valid yet",
            "check this machine's clock",
        ),
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => trouble(
            format!(
                "the server's certificate is for {}, not for {}",
                if presented.is_empty() {
                    "no name".to_owned()
                } else {
                    presented
                        .iter()
                        .map(|n| bare_name(n))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                expected.to_str()
            ),
            "check the host name in api.base_url, or give the server a certificate for that name",
        ),
        CertificateError::NotValidForName => trouble(
            "the server's certificate is for another name than the one in api.base_url",
            "check the host name in api.base_url, or give the server a certificate for that name",
        ),
        CertificateError::Revoked => trouble(
            "the server's certificate has been revoked",
            "the server needs a new certificate",
        ),
        other => trouble(
            format!("the server's certificate is refused ({other})"),
            "check the server's certificate and TLS terminator",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_error_is_found_inside_an_io_error() {
        let io = std::io::Error::other(TlsError::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        let t = tls_trouble(&io).unwrap();
        assert!(t.cause.contains("does not trust"), "{t:?}");
        assert!(t.todo.contains("SSL_CERT_FILE"), "{t:?}");
        let nested = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            TlsError::InvalidCertificate(CertificateError::Expired),
        ));
        assert!(tls_trouble(&nested).unwrap().cause.contains("expired"));
        let plain = std::io::Error::other("connection refused");
        assert_eq!(tls_trouble(&plain), None);
    }

    #[test]
    fn expiry_is_a_date() {
        let e = TlsError::InvalidCertificate(CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000)),
            not_after: UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000)),
        });
        let t = tls_trouble(&e).unwrap();
        assert_eq!(
            t.cause,
            "the server's certificate expired on 2023-11-14T22:13:20Z"
        );
    }
}
