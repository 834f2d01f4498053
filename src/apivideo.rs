//! The wire: every fact of api.video's protocol the product relies on
//! (URLs, limits, headers, reply shapes), and the clients that speak it.
//!
//! - `upload`: the upload client (`POST {base_url}/upload?token=…`, one
//!   multipart `file` part, `Content-Range` for chunks).
//! - `problem`: replies classified once into [`ApiError`], rate-limit headers.
//! - `tls`: a refused TLS handshake said in words, with what to do.
//! - `tokens`: the token API (`/auth/api-key`, `/upload-tokens`) for
//!   `ingestd token`.
//!
//! It decides nothing about files: what an error does to one is `upload`'s
//! (the stage's) business.

mod problem;
mod tls;
pub mod tokens;
mod upload;

pub(crate) use problem::{chain, read_limited};
pub use problem::{classify, ApiError, ErrorClass, Problem, RateInfo, Reply};
pub use tls::{tls_trouble, TlsTrouble};
pub use upload::{http_client, Client, TokenCheck};

/// Sent with every request, so the server side can tell who is talking.
pub(crate) const USER_AGENT: &str = concat!("ingestd/", env!("CARGO_PKG_VERSION"));

/// The largest total the `bytes` Content-Range accepts (api.video's limit).
pub const MAX_TOTAL_BYTES: u64 = 52_428_800_000;

/// How much of a reply body is read at most: replies are small JSON objects,
/// and a misbehaving server must not make us buffer without bound.
const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// A byte range of a file: `len` bytes from `offset`, of a file of `total` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub offset: u64,
    pub len: u64,
    pub total: u64,
}

impl ByteRange {
    /// The inclusive last byte.
    pub(crate) fn last_byte(&self) -> u64 {
        self.offset + self.len - 1
    }

    /// `bytes FROM-TO/TOTAL`, TO inclusive.
    pub(crate) fn content_range(&self) -> String {
        format!("bytes {}-{}/{}", self.offset, self.last_byte(), self.total)
    }

    pub fn is_last(&self) -> bool {
        self.offset + self.len == self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_inclusive() {
        let r = ByteRange {
            offset: 0,
            len: 1000,
            total: 5000,
        };
        assert_eq!(r.content_range(), "bytes 0-999/5000");
        assert!(!r.is_last());
        let r = ByteRange {
            offset: 4999,
            len: 1,
            total: 5000,
        };
        assert_eq!(r.content_range(), "bytes 4999-4999/5000");
        assert!(r.is_last());
    }
}
