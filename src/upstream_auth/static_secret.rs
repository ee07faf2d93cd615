//! `mode: static`: a header value read from a file, for upstreams that only take an API key
//! or a fixed token. The file is read when the config compiles and watched like every
//! referenced file, so replacing it applies at the next reload; the value is never printed.

use std::path::PathBuf;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use super::Sent;
use crate::principal::{hash_prefix, token_hash};

/// Longest static value.
const MAX_VALUE: usize = 8192;

/// The header and the value a `static` route sends upstream.
pub struct StaticCredential {
    pub header: HeaderName,
    value: HeaderValue,
    /// The value's 12-hex-digit SHA-256 prefix, for the audit line.
    hash: Arc<str>,
    /// SHA-256 of the value, for comparisons across reloads (never the value).
    digest: [u8; 32],
    pub file: PathBuf,
}

impl std::fmt::Debug for StaticCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredential")
            .field("header", &self.header)
            .field("value", &"****")
            .field("file", &self.file)
            .finish()
    }
}

impl StaticCredential {
    /// The value in `bytes` (the file's content, one trailing newline stripped): 1 to 8192
    /// bytes of visible ASCII and inner spaces (`Bearer abc` is fine; a leading or
    /// trailing space, a tab or a control byte would be read differently by different
    /// servers, so they are refused).
    pub fn compile(header: HeaderName, bytes: &[u8], file: PathBuf) -> Result<Self, String> {
        let v = crate::compile::strip_one_newline(bytes);
        if v.is_empty() {
            return Err("is empty".into());
        }
        if v.len() > MAX_VALUE {
            return Err(format!("is longer than {MAX_VALUE} bytes"));
        }
        let visible = |b: &u8| (0x21..=0x7e).contains(b);
        if !v.iter().all(|b| visible(b) || *b == b' ')
            || !v.first().is_some_and(visible)
            || !v.last().is_some_and(visible)
        {
            return Err(
                "must be visible ASCII (inner spaces allowed), without control bytes or \
                 leading or trailing white space"
                    .into(),
            );
        }
        let mut value =
            HeaderValue::from_bytes(v).map_err(|_| "is not a valid header value".to_string())?;
        value.set_sensitive(true);
        let text = String::from_utf8_lossy(v);
        let digest = token_hash(&text);
        Ok(StaticCredential {
            header,
            value,
            hash: Arc::from(hash_prefix(&digest)),
            digest,
            file,
        })
    }

    /// What the upstream receives.
    pub fn sent(&self) -> Sent {
        Sent {
            header: self.header.clone(),
            value: self.value.clone(),
            hash: self.hash.clone(),
        }
    }

    /// SHA-256 of the value.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn h() -> HeaderName {
        HeaderName::from_static("x-api-key")
    }

    #[test]
    fn values_are_checked_and_never_printed() {
        let s = StaticCredential::compile(h(), b"Bearer sk-live-123\n", "f".into()).unwrap();
        let sent = s.sent();
        assert_eq!(sent.value.as_bytes(), b"Bearer sk-live-123");
        assert!(sent.value.is_sensitive());
        assert_eq!(&*sent.hash, &hash_prefix(&token_hash("Bearer sk-live-123")));
        assert!(!format!("{s:?}").contains("sk-live"));
        assert!(!format!("{sent:?}").contains("sk-live"));
        for bad in [
            &b""[..],
            b"\n",
            b" lead",
            b"trail ",
            b"tab\there",
            b"nul\0",
            b"cr\rlf",
            "é".as_bytes(),
        ] {
            assert!(
                StaticCredential::compile(h(), bad, "f".into()).is_err(),
                "{bad:?}"
            );
        }
        assert!(StaticCredential::compile(h(), &vec![b'a'; 9000], "f".into()).is_err());
    }
}
