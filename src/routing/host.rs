//! The host a request is for: `Host`, `:authority`, or the authority of an absolute-form
//! target, reduced to what routing compares, and refused when ambiguous.

use pingora_http::RequestHeader;

use crate::error::Refusal;

/// An authority (`Host`, `:authority`, or that of an absolute-form target) reduced to
/// what routing compares: the host lower-cased, without port and without the one
/// trailing dot of an absolute domain name (`mcp.example.com.` is `mcp.example.com`),
/// and the port as written. Anything but `host[:port]` with a plain host name, an IPv4
/// address or a bracketed IPv6 literal is refused: userinfo, percent-encoding, spaces,
/// empty labels, an empty or non-numeric port.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Authority {
    pub host: String,
    pub port: Option<u16>,
}

pub(crate) fn parse_authority(a: &str) -> Result<Authority, Refusal> {
    const BAD: Refusal = Refusal::BadRequest("the request's host is not host[:port]");
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (literal, after) = rest.split_once(']').ok_or(BAD)?;
        if literal.is_empty()
            || !literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(BAD);
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(BAD)?),
        };
        (format!("[{}]", literal.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match a.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !host.split('.').all(label_ok) {
            return Err(BAD);
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().map_err(|_| BAD)?)
        }
        Some(_) => return Err(BAD),
    };
    Ok(Authority { host, port })
}

/// The host a request is for (see `Authority`). Every request must name one: HTTP/1.x
/// in exactly one `Host` header (RFC 9112 §3.2, also with an absolute-form target, whose
/// authority must then be the same), HTTP/2 in `:authority` or `Host`.
pub fn request_host(req: &RequestHeader) -> Result<String, Refusal> {
    let mut hosts = req.headers.get_all(http::header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::BadRequest("more than one Host header"));
    }
    let host_header = match host_header {
        Some(h) => {
            Some(parse_authority(h.to_str().map_err(|_| {
                Refusal::BadRequest("Host header is not ASCII")
            })?)?)
        }
        None => None,
    };
    // The authority from an h2 :authority or an absolute-form request target.
    let raw = req.raw_path();
    let target_authority = if let Some(a) = req.uri.authority() {
        Some(a.as_str().to_string())
    } else if !raw.starts_with(b"/") && raw != b"*" {
        let s = std::str::from_utf8(raw)
            .map_err(|_| Refusal::BadRequest("request target is not ASCII"))?;
        let after = s
            .split_once("://")
            .map(|(_, a)| a)
            .ok_or(Refusal::BadRequest(
                "request target is neither a path nor an absolute URL",
            ))?;
        Some(after.split(['/', '?']).next().unwrap_or("").to_string())
    } else {
        None
    };
    let target_authority = target_authority
        .as_deref()
        .map(parse_authority)
        .transpose()?;
    let h2 = req.version == http::Version::HTTP_2;
    match (target_authority, host_header) {
        (Some(t), Some(h)) if t != h => Err(Refusal::BadRequest(
            "request target authority and Host header differ",
        )),
        (_, Some(h)) => Ok(h.host),
        (Some(t), None) if h2 => Ok(t.host),
        (Some(_), None) => Err(Refusal::BadRequest(
            "an absolute-form request target needs a Host header too",
        )),
        (None, None) => Err(Refusal::BadRequest("the request has no Host header")),
    }
}
