//! Legacy API keys: the hashed key file, key lookup, and the deprecation signals sent
//! to clients that still use keys.
//!
//! The credentials step of routes with `auth: api_key` or `auth: both`. Keys never
//! appear in the config: the key file (`api_keys.file`) holds one entry per key with the
//! SHA-256 of the key, and is loaded when the config compiles (a bad key file is a
//! rejected config; reload watches it). A presented key is hashed once and compared,
//! in constant time, with every entry's digest. A request authenticated by key gets
//! the same [`Principal`] shape as a token (subject, scopes, `X-Auth-Method: api_key`),
//! and its response carries `Deprecation` (RFC 9745), optionally `Sunset` (RFC 8594) and
//! a `Link` to the route's protected resource metadata, so clients learn to move to
//! OAuth.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use http::{HeaderName, HeaderValue};
use pingora_http::ResponseHeader;
use schemars::JsonSchema;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::auth::AuthMode;
use crate::compile::{relative_to, yaml_error, CompileError};
use crate::error::Refusal;
use crate::principal::{AuthMethod, Principal};
use crate::respond::set_header;

/// The default header carrying a key (`Authorization: ApiKey <key>` is accepted too).
pub const DEFAULT_HEADER: &str = "X-API-Key";

/// `api_keys`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileApiKeys {
    /// The key file (hashed entries), relative to the config file.
    pub file: PathBuf,
    #[serde(default = "default_api_key_header")]
    pub header: String,
}

fn default_api_key_header() -> String {
    DEFAULT_HEADER.to_string()
}

/// Load the key file `api_keys` names (relative to `config_file`).
pub fn compile(config_file: &str, f: FileApiKeys) -> Result<Arc<KeyStore>, CompileError> {
    KeyStore::load(&relative_to(config_file, f.file), &f.header).map(Arc::new)
}

/// Largest key file we read.
const MAX_FILE: u64 = 4 * 1024 * 1024;

// ---------------------------------------------------------------------------
// Key file
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKeys {
    keys: Vec<FileKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKey {
    id: String,
    sha256: String,
    subject: String,
    #[serde(default)]
    scopes: Vec<String>,
    /// RFC 3339 date-time or full-date (midnight UTC).
    expires: Option<String>,
}

/// One key: its digest and the principal it authenticates.
struct Entry {
    digest: [u8; 32],
    /// Unix time after which the key is refused.
    expires: Option<i64>,
    principal: Arc<Principal>,
}

/// Every key of the key file, immutable; replaced as a whole on reload.
pub struct KeyStore {
    /// The key file, as resolved (watched by reload).
    pub file: PathBuf,
    /// The header carrying a key.
    pub header: HeaderName,
    entries: Vec<Entry>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("file", &self.file)
            .field("header", &self.header)
            .field("keys", &self.entries.len())
            .finish()
    }
}

/// Why a presented key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    Unknown,
    Expired,
}

impl KeyStore {
    /// Read and validate a key file. Errors name the key file (and a line where serde
    /// gives one), so `mcpgate check` points at the right place.
    pub fn load(file: &Path, header: &str) -> Result<KeyStore, CompileError> {
        let name = file.display().to_string();
        let err = |reason: String| CompileError::in_file(&name, None, None, reason);
        let header = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
            err(format!(
                "api_keys.header {header:?} is not a valid header name"
            ))
        })?;
        if matches!(
            header.as_str(),
            "authorization" | "host" | "connection" | "content-length" | "transfer-encoding"
        ) {
            return Err(err(format!(
                "api_keys.header {:?} is reserved (use the default {DEFAULT_HEADER}; \
                 `Authorization: ApiKey <key>` is always accepted)",
                header.as_str()
            )));
        }
        let meta =
            std::fs::metadata(file).map_err(|e| err(format!("cannot read key file: {e}")))?;
        if meta.len() > MAX_FILE {
            return Err(err(format!("key file is larger than {MAX_FILE} bytes")));
        }
        let text =
            std::fs::read_to_string(file).map_err(|e| err(format!("cannot read key file: {e}")))?;
        KeyStore::parse(&name, file.to_path_buf(), header, &text)
    }

    fn parse(
        name: &str,
        file: PathBuf,
        header: HeaderName,
        text: &str,
    ) -> Result<KeyStore, CompileError> {
        let parsed: FileKeys = serde_yaml::from_str(text).map_err(|e| {
            let (line, column, reason) = yaml_error(&e);
            CompileError::in_file(name, line, column, reason)
        })?;
        let mut entries = Vec::with_capacity(parsed.keys.len());
        let mut ids = HashSet::new();
        let mut digests = HashSet::new();
        for (i, k) in parsed.keys.into_iter().enumerate() {
            let id = format!("{:?}", k.id);
            let entry = compile_key(k, &mut ids, &mut digests).map_err(|reason| {
                CompileError::in_file(name, None, None, format!("keys[{i}] ({id}): {reason}"))
            })?;
            entries.push(entry);
        }
        Ok(KeyStore {
            file,
            header,
            entries,
        })
    }

    /// The principal of a presented key. Every entry's digest is compared, in constant
    /// time, whatever matched before.
    pub fn authenticate(&self, key: &str, now: i64) -> Result<Arc<Principal>, KeyRefusal> {
        let digest = Sha256::digest(key.as_bytes());
        let mut found: Option<&Entry> = None;
        for e in &self.entries {
            if aws_lc_rs::constant_time::verify_slices_are_equal(&e.digest, &digest).is_ok() {
                found = Some(e);
            }
        }
        let e = found.ok_or(KeyRefusal::Unknown)?;
        if e.expires.is_some_and(|x| now >= x) {
            return Err(KeyRefusal::Expired);
        }
        Ok(e.principal.clone())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl KeyRefusal {
    pub fn refusal(self) -> Refusal {
        match self {
            KeyRefusal::Unknown => Refusal::InvalidApiKey("the API key is not valid"),
            KeyRefusal::Expired => Refusal::InvalidApiKey("the API key has expired"),
        }
    }
}

/// One key file entry, checked against the entries before it (`ids`, `digests`).
fn compile_key(
    k: FileKey,
    ids: &mut HashSet<String>,
    digests: &mut HashSet<[u8; 32]>,
) -> Result<Entry, String> {
    if k.id.is_empty() || !k.id.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err("id must be non-empty visible ASCII without spaces".into());
    }
    if !ids.insert(k.id.clone()) {
        return Err("id is used twice".into());
    }
    let digest = parse_digest(&k.sha256)
        .ok_or("sha256 must be 64 hex digits (the output of `mcpgate hash-key`)")?;
    if !digests.insert(digest) {
        return Err("the same key (sha256) is listed twice".into());
    }
    if k.subject.is_empty() {
        return Err("subject must not be empty".into());
    }
    for s in &k.scopes {
        crate::scope::check_scope_token(s)?;
    }
    let expires = k
        .expires
        .as_deref()
        .map(|e| parse_rfc3339(e).map_err(|r| format!("expires: {r}")))
        .transpose()?;
    let principal = Principal {
        method: AuthMethod::ApiKey,
        iss: Arc::from(""),
        issuer_name: Arc::from(""),
        subject: Some(k.subject.into_boxed_str()),
        client_id: Some(Arc::from(k.id)),
        scopes: crate::scope::ScopeSet::parse(&k.scopes.join(" ")),
        audiences: Arc::new([]),
        any_audience: true,
        exp: expires.unwrap_or(NEVER),
        nbf: None,
        skew: 0,
        cnf_jkt: None,
        jti: None,
        iat: None,
        azp: None,
    };
    Ok(Entry {
        digest,
        expires,
        principal: Arc::new(principal),
    })
}

/// The `exp` of a key without `expires`: far enough never to come, small enough that
/// adding a skew or grace cannot overflow.
const NEVER: i64 = i64::MAX / 4;

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let b = hex.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// An RFC 3339 `date-time` (any offset, fractional seconds ignored) or `full-date`
/// (midnight UTC), as Unix seconds.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let date = (|| {
        let (y, rest) = s.split_once('-')?;
        let (m, d) = rest.split_once('-')?;
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return None;
        }
        let month = time::Month::try_from(m.parse::<u8>().ok()?).ok()?;
        time::Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()
    })();
    match date {
        Some(d) => Ok(d.midnight().assume_utc().unix_timestamp()),
        None => Err(format!(
            "{s:?} is not an RFC 3339 date-time (2026-12-31T23:59:59Z) or date (2026-12-31)"
        )),
    }
}

// ---------------------------------------------------------------------------
// `mcpgate hash-key`
// ---------------------------------------------------------------------------

/// What `mcpgate hash-key` prints for a key read from stdin.
pub struct NewEntry<'a> {
    pub id: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub scopes: &'a [String],
    pub expires: Option<&'a str>,
}

/// The key file entry for `key`, as YAML lines to paste under `keys:`. The key must be
/// usable in a header: visible ASCII, no spaces.
pub fn render_entry(key: &[u8], e: &NewEntry<'_>) -> Result<String, String> {
    if key.is_empty() {
        return Err(
            "the key is empty (pass it on stdin: `printf %s \"$KEY\" | mcpgate hash-key`)".into(),
        );
    }
    if key.len() > crate::auth::credentials::MAX_AUTHORIZATION {
        return Err(format!(
            "the key is longer than the {} bytes the gateway reads from a request",
            crate::auth::credentials::MAX_AUTHORIZATION
        ));
    }
    if !key.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(
            "the key has spaces, control or non-ASCII bytes: it could not be sent in a header"
                .into(),
        );
    }
    let hex: String = Sha256::digest(key)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let id = match e.id {
        Some(id) if !id.is_empty() && id.bytes().all(|b| (0x21..=0x7e).contains(&b)) => {
            id.to_string()
        }
        Some(id) => return Err(format!("--id {id:?} must be visible ASCII without spaces")),
        None => format!("key-{}", &hex[..8]),
    };
    for s in e.scopes {
        crate::scope::check_scope_token(s)?;
    }
    if let Some(x) = e.expires {
        parse_rfc3339(x)?;
    }
    let yaml_str = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut out = format!(
        "  - id: {}\n    sha256: {hex}\n    subject: {}\n    scopes: [{}]\n",
        yaml_str(&id),
        yaml_str(e.subject.unwrap_or(&id)),
        e.scopes
            .iter()
            .map(|s| yaml_str(s))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(x) = e.expires {
        out.push_str(&format!("    expires: {}\n", yaml_str(x)));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Deprecation signals (response headers)
// ---------------------------------------------------------------------------

/// Response headers for requests a route authenticated by API key, rendered once when
/// the config compiles.
#[derive(Debug, Clone)]
pub struct Deprecation {
    /// `Deprecation: @<epoch seconds>` (RFC 9745).
    pub deprecation: HeaderValue,
    /// `Sunset: <HTTP-date>` (RFC 8594), when the route sets `api_key_sunset`.
    pub sunset: Option<HeaderValue>,
    /// `Link: <PRM URL>; rel="deprecation"`, on routes that also accept OAuth (only they
    /// serve metadata).
    pub link: Option<HeaderValue>,
    /// For `mcpgate check` and logs.
    pub deprecated_at: i64,
    pub sunset_at: Option<i64>,
}

/// When each route was first configured with API keys in this process, so a reload does
/// not move the default deprecation date.
static FIRST_CONFIGURED: LazyLock<Mutex<HashMap<String, i64>>> = LazyLock::new(Mutex::default);

fn first_configured(route: &str) -> i64 {
    let now = crate::clock::now_unix();
    match FIRST_CONFIGURED.lock() {
        Ok(mut m) => *m.entry(route.to_string()).or_insert(now),
        Err(_) => now,
    }
}

impl Deprecation {
    /// The route's deprecation headers (`None` unless the route accepts keys).
    pub fn compile(
        route: &str,
        auth: AuthMode,
        deprecated_at: Option<&str>,
        sunset: Option<&str>,
        metadata_url: &str,
    ) -> Result<Option<Deprecation>, String> {
        if !auth.accepts_api_key() {
            if deprecated_at.is_some() || sunset.is_some() {
                return Err(
                    "api_key_deprecated_at and api_key_sunset need auth: api_key or both".into(),
                );
            }
            return Ok(None);
        }
        let sunset_at = sunset
            .map(|s| parse_rfc3339(s).map_err(|e| format!("api_key_sunset: {e}")))
            .transpose()?;
        let deprecated_at = match deprecated_at {
            Some(s) => {
                let t = parse_rfc3339(s).map_err(|e| format!("api_key_deprecated_at: {e}"))?;
                if sunset_at.is_some_and(|s| s < t) {
                    return Err("api_key_sunset must not be before api_key_deprecated_at".into());
                }
                t
            }
            // Never after the sunset: a config whose sunset has passed stays valid.
            None => first_configured(route).min(sunset_at.unwrap_or(i64::MAX)),
        };
        let value = |s: String| {
            HeaderValue::from_str(&s).map_err(|_| format!("cannot render header value {s:?}"))
        };
        let sunset = sunset_at
            .map(|t| {
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64);
                value(httpdate::fmt_http_date(at))
            })
            .transpose()?;
        let link = if auth.accepts_oauth() {
            Some(value(format!("<{metadata_url}>; rel=\"deprecation\""))?)
        } else {
            None
        };
        Ok(Some(Deprecation {
            deprecation: value(format!("@{deprecated_at}"))?,
            sunset,
            link,
            deprecated_at,
            sunset_at,
        }))
    }

    /// Add the headers to a response going to the client.
    pub fn apply(&self, resp: &mut ResponseHeader) {
        let name = http::HeaderName::from_static;
        set_header(resp, name("deprecation"), self.deprecation.clone(), false);
        if let Some(s) = &self.sunset {
            set_header(resp, name("sunset"), s.clone(), false);
        }
        if let Some(l) = &self.link {
            set_header(resp, http::header::LINK, l.clone(), true);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn hex(key: &str) -> String {
        Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn store(text: &str) -> Result<KeyStore, CompileError> {
        KeyStore::parse(
            "keys.yaml",
            PathBuf::from("keys.yaml"),
            HeaderName::from_static("x-api-key"),
            text,
        )
    }

    use crate::compile::strip_one_newline;

    #[test]
    fn valid_unknown_expired() {
        let text = format!(
            "keys:\n  - id: ci\n    sha256: {}\n    subject: ci-bot\n    scopes: [mcp:tools, b]\n  - id: old\n    sha256: {}\n    subject: old-bot\n    expires: 2020-01-01T00:00:00Z\n",
            hex("secret-one"),
            hex("secret-two").to_uppercase()
        );
        let s = store(&text).unwrap();
        assert_eq!(s.len(), 2);
        let p = s.authenticate("secret-one", 1_700_000_000).unwrap();
        assert_eq!(p.subject.as_deref(), Some("ci-bot"));
        assert_eq!(p.client_id.as_deref(), Some("ci"));
        assert_eq!(p.scopes.as_str(), "mcp:tools b");
        assert_eq!(p.method, AuthMethod::ApiKey);
        assert_eq!(
            s.authenticate("secret-three", 0).unwrap_err(),
            KeyRefusal::Unknown
        );
        assert_eq!(
            s.authenticate("secret-two", 1_577_836_800).unwrap_err(),
            KeyRefusal::Expired
        );
        assert!(s.authenticate("secret-two", 1_577_836_799).is_ok());
        assert_eq!(
            s.authenticate("secret-one\n", 0).unwrap_err(),
            KeyRefusal::Unknown
        );
    }

    #[test]
    fn bad_files_are_errors_with_location() {
        let e = store("keys:\n  - id: a\n    sha256: abc\n    subject: s\n").unwrap_err();
        assert!(e.reason.contains("64 hex"), "{e}");
        let e = store(&format!(
            "keys:\n  - id: a\n    sha256: {}\n    subject: s\n    scope: [x]\n",
            hex("k")
        ))
        .unwrap_err();
        assert_eq!(e.elsewhere.as_ref().unwrap().line, Some(5), "{e}");
        assert!(e.reason.contains("unknown field `scope`"), "{e}");
        let dup = format!(
            "keys:\n  - {{id: a, sha256: {h}, subject: s}}\n  - {{id: b, sha256: {h}, subject: s}}\n",
            h = hex("k")
        );
        assert!(store(&dup).unwrap_err().reason.contains("twice"));
        let bad_date = format!(
            "keys:\n  - {{id: a, sha256: {}, subject: s, expires: tomorrow}}\n",
            hex("k")
        );
        assert!(store(&bad_date).unwrap_err().reason.contains("RFC 3339"));
        assert!(store("keys: []\n").unwrap().is_empty());
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(parse_rfc3339("2026-12-31").unwrap(), 1_798_675_200);
        assert_eq!(
            parse_rfc3339("2026-12-31T01:00:00+01:00").unwrap(),
            1_798_675_200
        );
        assert!(parse_rfc3339("2026-13-01").is_err());
        assert!(parse_rfc3339("31/12/2026").is_err());
    }

    #[test]
    fn hash_key_entry() {
        assert_eq!(strip_one_newline(b"abc\n\n"), b"abc\n");
        assert_eq!(strip_one_newline(b"abc\r\n"), b"abc");
        assert_eq!(strip_one_newline(b"abc"), b"abc");
        let out = render_entry(
            b"secret-one",
            &NewEntry {
                id: Some("ci"),
                subject: Some("ci-bot"),
                scopes: &["mcp:tools".to_string()],
                expires: Some("2027-01-01"),
            },
        )
        .unwrap();
        let s = store(&format!("keys:\n{out}")).unwrap();
        assert!(s.authenticate("secret-one", 0).is_ok());
        let default = render_entry(
            b"k",
            &NewEntry {
                id: None,
                subject: None,
                scopes: &[],
                expires: None,
            },
        )
        .unwrap();
        assert!(default.contains(&format!("id: \"key-{}\"", &hex("k")[..8])));
        assert!(store(&format!("keys:\n{default}")).is_ok());
        let huge = vec![b'k'; crate::auth::credentials::MAX_AUTHORIZATION + 1];
        for bad in [&b""[..], b"a b", b"caf\xc3\xa9", b"a\tb", &huge] {
            assert!(
                render_entry(
                    bad,
                    &NewEntry {
                        id: None,
                        subject: None,
                        scopes: &[],
                        expires: None
                    }
                )
                .is_err(),
                "{bad:?}"
            );
        }
    }

    fn write_config(dir: &Path, keys: &str, routes: &str) -> PathBuf {
        std::fs::write(dir.join("keys.yaml"), keys).unwrap();
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "listen: {{address: '127.0.0.1:1', public_url: 'https://mcp.example.com'}}\nadmin: {{address: '127.0.0.1:2'}}\nissuers: [{{name: a, issuer: 'https://as.example.com'}}]\napi_keys: {{file: keys.yaml}}\nroutes:\n{routes}"
            ),
        )
        .unwrap();
        config
    }

    #[test]
    fn key_file_compiles_with_the_config() {
        use crate::config::Config;
        let dir = tempfile::tempdir().unwrap();
        let keys = format!(
            "keys:\n  - {{id: ci, sha256: {}, subject: ci-bot}}\n",
            hex("k")
        );
        let routes = "- {name: both, path_prefix: /mcp, upstream: 'http://127.0.0.1:3', auth: both, api_key_sunset: '2030-01-01'}\n- {name: legacy, path_prefix: /legacy, upstream: 'http://127.0.0.1:3', auth: api_key}\n- {name: oauth, path_prefix: /o, upstream: 'http://127.0.0.1:3'}\n";
        let c = Config::load(&write_config(dir.path(), &keys, routes)).unwrap();
        let store = c.api_keys.as_ref().unwrap();
        assert_eq!(store.len(), 1);
        assert_eq!(store.file, dir.path().join("keys.yaml"));
        assert!(c
            .routes
            .iter()
            .all(|r| r.auth.api_key_header.as_ref().unwrap() == "x-api-key"));
        assert!(c.routes[0]
            .auth
            .deprecation
            .as_ref()
            .unwrap()
            .link
            .is_some());
        assert!(c.routes[1]
            .auth
            .deprecation
            .as_ref()
            .unwrap()
            .link
            .is_none());
        assert!(c.routes[2].auth.deprecation.is_none());
        // `both` serves metadata; `api_key` does not.
        let served = c.table.metadata_routes();
        assert!(served.contains(&0) && !served.contains(&1));
        assert!(c.summary().contains("api keys: 1"));

        // A bad key file is a rejected config, naming the key file and line.
        let bad = "keys:\n  - id: ci\n    sha256: nope\n    subject: s\n    extra: 1\n";
        let e = Config::load(&write_config(dir.path(), bad, routes)).unwrap_err();
        assert!(e.file.ends_with("keys.yaml"), "{e}");
        assert_eq!(e.line, Some(5), "{e}");
        std::fs::remove_file(dir.path().join("keys.yaml")).unwrap();
        let config = dir.path().join("config.yaml");
        let e = Config::load(&config).unwrap_err();
        assert!(e.reason.contains("cannot read key file"), "{e}");
    }

    #[test]
    fn api_key_routes_need_a_key_file() {
        use crate::config::Config;
        let base = "listen: {address: '127.0.0.1:1', public_url: 'https://mcp.example.com'}\nadmin: {address: '127.0.0.1:2'}\nroutes:\n- {name: legacy, path_prefix: /legacy, upstream: 'http://127.0.0.1:3', auth: api_key}\n";
        let e = Config::from_yaml("t", base).unwrap_err();
        assert!(e.reason.contains("no api_keys file"), "{e}");
        let sunset_on_oauth = "listen: {address: '127.0.0.1:1', public_url: 'https://mcp.example.com'}\nadmin: {address: '127.0.0.1:2'}\nissuers: [{name: a, issuer: 'https://as.example.com'}]\nroutes:\n- {name: m, path_prefix: /m, upstream: 'http://127.0.0.1:3', api_key_sunset: '2030-01-01'}\n";
        let e = Config::from_yaml("t", sunset_on_oauth).unwrap_err();
        assert!(e.reason.contains("api_key_sunset"), "{e}");
    }

    #[test]
    fn deprecation_headers() {
        let url = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";
        let d = Deprecation::compile(
            "r",
            AuthMode::Both,
            Some("2026-01-01T00:00:00Z"),
            Some("2026-12-31"),
            url,
        )
        .unwrap()
        .unwrap();
        assert_eq!(d.deprecation, "@1767225600");
        assert_eq!(d.sunset.unwrap(), "Thu, 31 Dec 2026 00:00:00 GMT");
        assert_eq!(
            d.link.unwrap(),
            format!("<{url}>; rel=\"deprecation\"").as_str()
        );
        let k = Deprecation::compile("r2", AuthMode::ApiKey, None, None, url)
            .unwrap()
            .unwrap();
        assert!(k.link.is_none() && k.sunset.is_none());
        // The default date is stable across recompiles of the same route.
        let again = Deprecation::compile("r2", AuthMode::ApiKey, None, None, url)
            .unwrap()
            .unwrap();
        assert_eq!(k.deprecated_at, again.deprecated_at);
        assert!(Deprecation::compile("r", AuthMode::Oauth, None, Some("2026-12-31"), url).is_err());
        assert!(Deprecation::compile("r", AuthMode::Oauth, None, None, url)
            .unwrap()
            .is_none());
        assert!(Deprecation::compile(
            "r",
            AuthMode::Both,
            Some("2027-01-01"),
            Some("2026-12-31"),
            url
        )
        .is_err());
        // Only a sunset, already past: still valid, deprecated no later than the sunset.
        let past = Deprecation::compile("r3", AuthMode::ApiKey, None, Some("2021-01-01"), url)
            .unwrap()
            .unwrap();
        assert_eq!(past.deprecation, "@1609459200");
    }
}
