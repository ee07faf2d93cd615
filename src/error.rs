//! Why the gateway refuses: [`Refusal`], each with one [`Reason`], and the other answers it
//! writes in an upstream's place. What they look like on the wire (status, challenges, JSON
//! body) is rendered by `respond`, the one door every response of the gateway leaves
//! through.
//!
//! Bottom layer: it imports nothing of ours, so every step of the request flow can return a
//! `Refusal` without knowing how it is rendered. [`Reason`] is the closed list of refusal
//! reasons: its label is the `reason` of `mcpgate_requests_total` and of the audit line,
//! and it fixes the status and the OAuth error code, all from the one table in
//! `reasons!`; the README's table of refusals is tested against it.

use std::borrow::Cow;

/// Declares [`Reason`] from one table: variant, metric label, status, OAuth error code.
macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident = ($label:literal, $status:literal, $code:literal), )*) => {
        /// Why a request was refused: the bounded label of metrics and audit lines.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $( $(#[$doc])* $variant, )*
        }

        impl Reason {
            /// Every reason, in declaration order (`ALL[r as usize] == r`).
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];
            /// How many reasons there are (the size of per-reason tables).
            pub const COUNT: usize = Self::ALL.len();

            /// The label: `reason` in `mcpgate_requests_total` and in the audit line.
            pub fn as_str(self) -> &'static str {
                match self { $(Reason::$variant => $label,)* }
            }

            /// The HTTP status of a refusal for this reason.
            pub fn status(self) -> u16 {
                match self { $(Reason::$variant => $status,)* }
            }

            /// The OAuth-style `error` code of the JSON body (and of a challenge).
            pub fn code(self) -> &'static str {
                match self { $(Reason::$variant => $code,)* }
            }
        }
    };
}

reasons! {
    /// The request path cannot be normalized safely.
    BadPath = ("bad_path", 400, "invalid_request"),
    /// Some other malformed request (host confusion, upgrade, ambiguous headers...).
    BadRequest = ("bad_request", 400, "invalid_request"),
    /// No route, or no metadata document, for this path.
    NoRoute = ("no_route", 404, "not_found"),
    /// Malformed credentials (RFC 6750 `invalid_request`).
    MalformedCredentials = ("malformed_credentials", 400, "invalid_request"),
    /// No usable credentials: the discovery challenge.
    NoCredentials = ("no_credentials", 401, "unauthorized"),
    /// The token is expired, malformed, for another audience, badly signed...
    InvalidToken = ("invalid_token", 401, "invalid_token"),
    /// The token lacks a scope the route requires.
    InsufficientScope = ("insufficient_scope", 403, "insufficient_scope"),
    /// No usable signing keys for the token's issuer.
    KeysUnavailable = ("keys_unavailable", 503, "temporarily_unavailable"),
    /// The issuer could not be asked about an opaque token.
    IntrospectionUnavailable = ("introspection_unavailable", 503, "temporarily_unavailable"),
    /// The authorization server refused to issue the route's upstream credential (an RFC
    /// 8693 exchange refused with `invalid_grant`, `invalid_target`...).
    UpstreamCredentialRefused = ("upstream_credential_refused", 403, "access_denied"),
    /// The route's upstream credential could not be obtained (the AS unreachable, slow,
    /// answering garbage, refusing the gateway's own client; its breaker open).
    UpstreamCredentialUnavailable = ("upstream_credential_unavailable", 503, "temporarily_unavailable"),
    /// An unknown, expired or sunset API key.
    InvalidApiKey = ("invalid_api_key", 401, "invalid_api_key"),
    /// Request headers over `limits.max_header_bytes`.
    HeadersTooLarge = ("headers_too_large", 431, "invalid_request"),
    /// Request body over `limits.max_body_bytes`.
    BodyTooLarge = ("body_too_large", 413, "invalid_request"),
    /// An `Origin` the route does not allow.
    OriginDenied = ("origin_denied", 403, "access_denied"),
    /// A malformed MCP request (JSON-RPC error body).
    McpMalformed = ("mcp_malformed", 400, "invalid_request"),
    /// A request for an MCP protocol version the route does not let through (`protocol_versions`).
    UnsupportedProtocolVersion = ("unsupported_protocol_version", 400, "invalid_request"),
    /// An inspected MCP body over `limits.max_inspected_body_bytes` (64 KiB without a length).
    McpBodyTooLarge = ("mcp_body_too_large", 413, "invalid_request"),
    /// An MCP operation needs a scope the token lacks (step-up challenge).
    ToolScope = ("tool_scope", 403, "insufficient_scope"),
    /// No tool/resource/prompt pattern matches and the route's default is deny.
    PolicyDenied = ("policy_denied", 403, "access_denied"),
    /// A `tools/call` of a tool whose definition no longer matches its pin (`pin_tools`).
    ToolChanged = ("tool_changed", 403, "access_denied"),
    /// An `Mcp-Session-Id` opened by another identity.
    SessionMismatch = ("session_mismatch", 404, "not_found"),
    /// A missing, invalid or replayed DPoP proof.
    InvalidDpopProof = ("invalid_dpop_proof", 401, "invalid_dpop_proof"),
    /// The route wants a server nonce in the DPoP proof.
    UseDpopNonce = ("use_dpop_nonce", 401, "use_dpop_nonce"),
    /// The token is on the revocation list.
    TokenRevoked = ("token_revoked", 401, "invalid_token"),
    /// Shared state (Redis) cannot answer and the feature fails closed.
    StateUnavailable = ("state_unavailable", 503, "temporarily_unavailable"),
    /// A method the MCP transport does not use, on a policy route.
    MethodNotAllowed = ("method_not_allowed", 405, "method_not_allowed"),
    /// A rate limit of `limits.rate` (or the route's) is spent.
    RateLimited = ("rate_limited", 429, "rate_limited"),
    /// The identity holds `streams_per_subject` open requests already.
    StreamLimit = ("stream_limit", 429, "rate_limited"),
    /// An `Mcp-Session-Id` no binding is known for, on a route that refuses such ids.
    SessionUnknown = ("session_unknown", 404, "not_found"),
    /// The request body did not arrive within `limits.request_body_timeout_seconds`.
    BodyTimeout = ("body_timeout", 408, "invalid_request"),
    /// The client's address holds `limits.max_connections_per_address` places already.
    TooManyRequests = ("too_many_requests", 429, "too_many_requests"),
    /// The gateway holds `limits.max_connections` places already.
    Overloaded = ("overloaded", 503, "temporarily_unavailable"),
    /// The upstream refused, reset or closed the exchange, or did not answer HTTP.
    UpstreamError = ("upstream_error", 502, "bad_gateway"),
    /// The upstream did not connect or answer in time.
    UpstreamTimeout = ("upstream_timeout", 504, "gateway_timeout"),
    /// The gateway failed itself (a header it could not set, a broken invariant).
    InternalError = ("internal_error", 500, "internal_error"),
}

/// A refused request: what the client is told, through `respond`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request path cannot be normalized safely (the path module's description).
    BadPath(&'static str),
    /// Some other malformed request (host confusion, upgrade...).
    BadRequest(&'static str),
    /// No route matches.
    NotFound,
    /// Malformed credentials (RFC 6750 `invalid_request`; the credential parser's
    /// description).
    Credentials(&'static str),
    /// No usable credentials: the discovery challenge, no error code.
    NoCredentials,
    /// The token is expired, malformed, for another audience, badly signed...
    InvalidToken(&'static str),
    /// The token lacks a scope the route requires.
    InsufficientScope,
    /// We cannot decide now (no usable keys): 503 with Retry-After.
    Unavailable(&'static str),
    /// The issuer could not answer an introspection (unreachable, too slow, 5xx, not
    /// JSON, or refusing our client credentials): 503 with Retry-After.
    IntrospectionUnavailable(&'static str),
    /// An unknown or expired API key.
    InvalidApiKey(&'static str),
    /// The authorization server refused to issue the credential the route sends upstream:
    /// 403 naming the route and the AS's error code (one of a fixed set, never its text).
    UpstreamCredentialRefused {
        route: std::sync::Arc<str>,
        as_error: &'static str,
    },
    /// The credential the route sends upstream could not be obtained: 503 with
    /// Retry-After.
    UpstreamCredentialUnavailable(&'static str),
    /// Request headers over `limits.max_header_bytes`.
    HeadersTooLarge,
    /// Request body over `limits.max_body_bytes`.
    BodyTooLarge,
    /// An `Origin` the route does not allow (DNS-rebinding protection): 403.
    OriginDenied,
    /// A malformed MCP request, or mirrored headers that disagree with the body: 400
    /// with a JSON-RPC error body.
    Mcp(McpError),
    /// The body of an inspected MCP request is larger than the gateway can inspect.
    McpBodyTooLarge,
    /// The operation needs scopes the token lacks; the value is every scope the
    /// operation requires, for the step-up challenge.
    ScopeFor(Box<str>),
    /// No tool/resource/prompt pattern matches and the route's default is deny.
    PolicyDenied,
    /// The tool's definition changed since it was pinned (`pin_tools: {mode: enforce}`).
    ToolChanged,
    /// An `Mcp-Session-Id` that belongs to another identity: answered as unknown.
    UnknownSession,
    /// An `Mcp-Session-Id` the gateway has no binding for, on a route with
    /// `unknown_sessions: refuse` (after a restart, on another replica): 404, so that the
    /// client opens a new session.
    SessionNotPlaced,
    /// The request body did not arrive within `limits.request_body_timeout_seconds`: 408.
    BodyTimeout,
    /// A cap on what clients hold (connections and requests in flight) refused the request:
    /// 429 for the client's address, 503 for the whole gateway; both with `Retry-After`.
    Busy(Cap),
    /// A missing or invalid DPoP proof (RFC 9449 `invalid_dpop_proof`): 401.
    DpopProof(&'static str),
    /// The route wants a server nonce in the proof; the value is a fresh one for the
    /// `DPoP-Nonce` header (RFC 9449 §8, `use_dpop_nonce`): 401.
    DpopNonce(Box<str>),
    /// The token is on the revocation list (by `jti`, subject or client): 401
    /// `invalid_token`.
    Revoked,
    /// Shared state (Redis) cannot answer and the feature fails closed: 503 with
    /// Retry-After.
    StateUnavailable(&'static str),
    /// A method the MCP transport does not use, on a route with an MCP policy: 405 with
    /// `Allow`.
    MethodNotAllowed,
    /// A rate limit is spent: 429 with `Retry-After` and the RateLimit fields.
    RateLimited(Box<Throttle>),
    /// The identity has `streams_per_subject` requests open: 429 likewise.
    TooManyStreams(Box<Throttle>),
    /// The request was let through but no answer came from the upstream: 502, 504 or 500
    /// (pingora's own error pages never reach clients).
    Gateway(GatewayFailure),
}

/// A request over a limit (429): which limit, when to retry, and the `RateLimit-Policy` and
/// `RateLimit` field values (draft-ietf-httpapi-ratelimit-headers), built by the limit's
/// owner; `respond` only writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    /// The limit that refused (the one with the longest wait).
    pub limit: Box<str>,
    /// Seconds until the request would be allowed (`Retry-After`).
    pub retry_after: u64,
    /// `RateLimit-Policy`: every limit that applied to the request.
    pub policy: Box<str>,
    /// `RateLimit`: what each of them has left.
    pub state: Box<str>,
    /// The request's JSON-RPC id when it was a single JSON-RPC request (the body is then a
    /// JSON-RPC error an agent can act on), as raw JSON.
    pub jsonrpc_id: Option<Box<str>>,
}

/// Which cap on what clients hold refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// `limits.max_connections_per_address`: 429.
    PerAddress,
    /// `limits.max_connections`: 503.
    Total,
}

/// Why a forwarded request got no upstream answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayFailure {
    /// Refused, reset or closed by the upstream, or an answer that is not HTTP: 502.
    BadGateway,
    /// The upstream did not connect or answer in time: 504.
    Timeout,
    /// The gateway failed itself: 500.
    Internal,
}

impl Refusal {
    /// The one reason of this refusal (metric label, audit field, status, code).
    pub fn reason(&self) -> Reason {
        match self {
            Refusal::BadPath(_) => Reason::BadPath,
            Refusal::BadRequest(_) => Reason::BadRequest,
            Refusal::NotFound => Reason::NoRoute,
            Refusal::Credentials(_) => Reason::MalformedCredentials,
            Refusal::NoCredentials => Reason::NoCredentials,
            Refusal::InvalidToken(_) => Reason::InvalidToken,
            Refusal::InsufficientScope => Reason::InsufficientScope,
            Refusal::Unavailable(_) => Reason::KeysUnavailable,
            Refusal::IntrospectionUnavailable(_) => Reason::IntrospectionUnavailable,
            Refusal::InvalidApiKey(_) => Reason::InvalidApiKey,
            Refusal::UpstreamCredentialRefused { .. } => Reason::UpstreamCredentialRefused,
            Refusal::UpstreamCredentialUnavailable(_) => Reason::UpstreamCredentialUnavailable,
            Refusal::HeadersTooLarge => Reason::HeadersTooLarge,
            Refusal::BodyTooLarge => Reason::BodyTooLarge,
            Refusal::OriginDenied => Reason::OriginDenied,
            Refusal::Mcp(e) if e.code == jsonrpc::UNSUPPORTED_PROTOCOL_VERSION => {
                Reason::UnsupportedProtocolVersion
            }
            Refusal::Mcp(_) => Reason::McpMalformed,
            Refusal::McpBodyTooLarge => Reason::McpBodyTooLarge,
            Refusal::ScopeFor(_) => Reason::ToolScope,
            Refusal::PolicyDenied => Reason::PolicyDenied,
            Refusal::ToolChanged => Reason::ToolChanged,
            Refusal::UnknownSession => Reason::SessionMismatch,
            Refusal::SessionNotPlaced => Reason::SessionUnknown,
            Refusal::BodyTimeout => Reason::BodyTimeout,
            Refusal::Busy(Cap::PerAddress) => Reason::TooManyRequests,
            Refusal::Busy(Cap::Total) => Reason::Overloaded,
            Refusal::DpopProof(_) => Reason::InvalidDpopProof,
            Refusal::DpopNonce(_) => Reason::UseDpopNonce,
            Refusal::Revoked => Reason::TokenRevoked,
            Refusal::StateUnavailable(_) => Reason::StateUnavailable,
            Refusal::MethodNotAllowed => Reason::MethodNotAllowed,
            Refusal::RateLimited(_) => Reason::RateLimited,
            Refusal::TooManyStreams(_) => Reason::StreamLimit,
            Refusal::Gateway(GatewayFailure::BadGateway) => Reason::UpstreamError,
            Refusal::Gateway(GatewayFailure::Timeout) => Reason::UpstreamTimeout,
            Refusal::Gateway(GatewayFailure::Internal) => Reason::InternalError,
        }
    }

    pub fn status(&self) -> u16 {
        self.reason().status()
    }

    /// OAuth error code for the body (and the challenge where one is sent).
    pub fn code(&self) -> &'static str {
        self.reason().code()
    }

    /// The `error_description`: a short string that fits the challenge grammar (no `"` or
    /// `\`); details go to the log. Static but for an upstream credential refusal, which
    /// names its route and the AS's error code.
    pub fn description(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Refusal::UpstreamCredentialRefused { route, as_error } => {
                return Cow::Owned(format!(
                    "the authorization server refused to issue the upstream credential of route {route} ({as_error})"
                ))
            }
            Refusal::BadPath(d)
            | Refusal::Credentials(d)
            | Refusal::BadRequest(d)
            | Refusal::InvalidToken(d)
            | Refusal::Unavailable(d)
            | Refusal::IntrospectionUnavailable(d)
            | Refusal::InvalidApiKey(d)
            | Refusal::StateUnavailable(d)
            | Refusal::UpstreamCredentialUnavailable(d)
            | Refusal::DpopProof(d) => d,
            Refusal::Revoked => "token has been revoked",
            Refusal::DpopNonce(_) => "the DPoP proof must carry the nonce in the DPoP-Nonce header",
            Refusal::NotFound => "no route for this path",
            Refusal::NoCredentials => "an access token is required",
            Refusal::InsufficientScope => "the access token lacks a required scope",
            Refusal::HeadersTooLarge => "request headers are too large",
            Refusal::BodyTooLarge => "request body is too large",
            Refusal::OriginDenied => "this Origin may not call this resource",
            Refusal::Mcp(e) => e.message,
            Refusal::McpBodyTooLarge => {
                "MCP request body is larger than the gateway inspects (limits.max_inspected_body_bytes, or 64 KiB without a Content-Length)"
            }
            Refusal::ScopeFor(_) => "the access token lacks a scope this operation requires",
            Refusal::PolicyDenied => "the gateway policy does not allow this operation",
            Refusal::ToolChanged => {
                "the definition of this tool changed since it was approved (pinned)"
            }
            Refusal::UnknownSession | Refusal::SessionNotPlaced => "unknown session",
            Refusal::BodyTimeout => "the request body did not arrive in time",
            Refusal::Busy(Cap::PerAddress) => "too many requests in flight from this address",
            Refusal::Busy(Cap::Total) => "the gateway is at its connection limit",
            Refusal::MethodNotAllowed => {
                "this method is not allowed on an MCP route (GET, POST, DELETE, OPTIONS are)"
            }
            Refusal::RateLimited(_) => "rate limit exceeded: retry after the Retry-After delay",
            Refusal::TooManyStreams(_) => "too many open requests and streams for this identity",
            Refusal::Gateway(GatewayFailure::BadGateway) => {
                "the upstream could not be reached or sent no valid answer"
            }
            Refusal::Gateway(GatewayFailure::Timeout) => "the upstream did not answer in time",
            Refusal::Gateway(GatewayFailure::Internal) => {
                "the gateway could not complete the request"
            }
        })
    }

    /// The limit a 429 is about.
    pub fn throttle(&self) -> Option<&Throttle> {
        match self {
            Refusal::RateLimited(t) | Refusal::TooManyStreams(t) => Some(t),
            _ => None,
        }
    }

    /// Whether a client should retry later (`Retry-After`): the gateway could not decide.
    pub fn retry_later(&self) -> bool {
        matches!(
            self,
            Refusal::Unavailable(_)
                | Refusal::IntrospectionUnavailable(_)
                | Refusal::StateUnavailable(_)
                | Refusal::UpstreamCredentialUnavailable(_)
                | Refusal::Busy(_)
        )
    }
}

/// JSON-RPC error codes the gateway answers with.
pub mod jsonrpc {
    /// The body is not JSON (or not a JSON-RPC message or batch).
    pub const PARSE_ERROR: i64 = -32700;
    /// A message without a method, result or error; an empty batch.
    pub const INVALID_REQUEST: i64 = -32600;
    /// A URI or reference the gateway cannot judge.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The server side (the gateway in front of the server) failed: an unreadable answer.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// `Mcp-Method` / `Mcp-Name` / `MCP-Protocol-Version` / `Mcp-Param-*` disagree with the
    /// body, or one the body needs is missing (2026-07-28 `HeaderMismatch`).
    pub const HEADER_MISMATCH: i64 = -32020;
    /// A rate limit refused the request. MCP 2026-07-28 reserves -32020 to -32099 for codes
    /// it defines and asks others to stay outside JSON-RPC's -32768 to -32000; 429 mirrors
    /// the HTTP status (ToolHive answers the same code).
    pub const RATE_LIMITED: i64 = 429;
    /// A protocol version the route does not let through (2026-07-28
    /// `UnsupportedProtocolVersion`, `data: {supported, requested}`).
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
}

/// Why an MCP request was refused before reaching the upstream (400, JSON-RPC error body).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct McpError {
    pub code: i64,
    pub message: &'static str,
    /// The request id, as raw JSON, when known.
    pub id: Option<Box<str>>,
    /// The error's `data`, as raw JSON, when the spec defines one.
    pub data: Option<Box<str>>,
}

impl McpError {
    pub fn new(code: i64, message: &'static str) -> McpError {
        McpError {
            code,
            message,
            ..McpError::default()
        }
    }
}

/// An upstream answer on a `filter_tools_list` route that the gateway cannot read (encoded,
/// starting with a byte order mark, not JSON, larger than the buffer, an SSE event larger than
/// its bound): the client gets a JSON-RPC error instead (`respond::unreadable_*`), never the
/// answer unfiltered and never a truncated one. Built by `lists`, which decides when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableAnswer {
    /// The request id, as raw JSON, when the request was a single message with one.
    pub id: Option<Box<str>>,
    pub message: &'static str,
}

impl UnreadableAnswer {
    /// Status when the head can still be chosen: the upstream sent what the gateway cannot use.
    pub const STATUS: u16 = 502;
}

/// Why the admin listener refuses a request (its own JSON errors, through `respond`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRefusal {
    /// `/revocations` without `admin.token_file`: 403.
    RevocationsDisabled,
    /// Two `Authorization` headers: neither is judged (400).
    TwoAuthorizations,
    /// A missing or wrong admin token: 401 with the admin `WWW-Authenticate`.
    BadToken,
    /// A body over the admin listener's limit: 413.
    BodyTooLarge,
    /// A body that could not be read: 400.
    BodyUnreadable,
    /// A body that did not arrive in time: 408.
    BodyTimeout,
    /// A `POST /revocations` body that is not a valid revocation: 400 with the reason.
    InvalidRevocation(String),
    /// The revocation list is full: 409.
    ListFull,
    /// Redis cannot answer: the revocation was not recorded (503, `Retry-After`).
    StoreUnavailable,
    /// A method `/revocations` does not take: 405 with `Allow`.
    MethodNotAllowed,
    /// The gateway failed itself (no random id could be drawn): 500.
    Internal,
}

impl AdminRefusal {
    pub fn status(&self) -> u16 {
        match self {
            AdminRefusal::RevocationsDisabled => 403,
            AdminRefusal::TwoAuthorizations
            | AdminRefusal::BodyUnreadable
            | AdminRefusal::InvalidRevocation(_) => 400,
            AdminRefusal::BadToken => 401,
            AdminRefusal::BodyTooLarge => 413,
            AdminRefusal::BodyTimeout => 408,
            AdminRefusal::ListFull => 409,
            AdminRefusal::StoreUnavailable => 503,
            AdminRefusal::MethodNotAllowed => 405,
            AdminRefusal::Internal => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AdminRefusal::RevocationsDisabled => "access_denied",
            AdminRefusal::BadToken => "invalid_token",
            AdminRefusal::StoreUnavailable => "temporarily_unavailable",
            AdminRefusal::Internal => "internal_error",
            _ => "invalid_request",
        }
    }

    pub fn description(&self) -> &str {
        match self {
            AdminRefusal::RevocationsDisabled => "revocations are disabled: set admin.token_file",
            AdminRefusal::TwoAuthorizations => "the Authorization header appears more than once",
            AdminRefusal::BadToken => "the admin token is missing or wrong",
            AdminRefusal::BodyTooLarge => "the body is too large",
            AdminRefusal::BodyUnreadable => "cannot read the body",
            AdminRefusal::BodyTimeout => "the body did not arrive in time",
            AdminRefusal::InvalidRevocation(e) => e,
            AdminRefusal::ListFull => "the revocation list is full (100000 unexpired entries)",
            AdminRefusal::StoreUnavailable => {
                "Redis cannot answer: the revocation was not recorded, retry"
            }
            AdminRefusal::MethodNotAllowed => "use GET or POST",
            AdminRefusal::Internal => "the revocation could not be recorded",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn reasons_are_distinct_and_indexed_by_position() {
        let mut labels: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Reason::COUNT);
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn descriptions_fit_challenge_grammar() {
        let all = [
            Refusal::Credentials("more than one Authorization header"),
            Refusal::InvalidApiKey("the API key is not valid"),
            Refusal::InvalidApiKey("the API key has expired"),
            Refusal::IntrospectionUnavailable(
                "the authorization server could not be asked about the token",
            ),
            Refusal::InsufficientScope,
            Refusal::NoCredentials,
            Refusal::Revoked,
            Refusal::DpopNonce("n".into()),
            Refusal::ScopeFor("a b".into()),
            Refusal::StateUnavailable("the DPoP replay store is unavailable"),
            Refusal::StateUnavailable("the revocation list is unavailable"),
            Refusal::StateUnavailable("the rate limit store is unavailable"),
            Refusal::RateLimited(Box::new(Throttle {
                limit: "x".into(),
                retry_after: 1,
                policy: "".into(),
                state: "".into(),
                jsonrpc_id: None,
            })),
        ];
        for r in all {
            assert!(r.description().bytes().all(|b| b == 0x20
                || b == 0x21
                || (0x23..=0x5b).contains(&b)
                || (0x5d..=0x7e).contains(&b)));
        }
    }

    #[test]
    fn revoked_is_invalid_token_with_its_own_reason() {
        assert_eq!(Refusal::Revoked.status(), 401);
        assert_eq!(Refusal::Revoked.code(), "invalid_token");
        assert_eq!(Refusal::Revoked.reason().as_str(), "token_revoked");
        assert!(Refusal::StateUnavailable("x").retry_later());
    }
}
