//! Gateway configurations: one YAML file per fixture under `tests/gateway/fixtures/`, with
//! `{PLACEHOLDER}`s the harness fills ([`render`]): `{PORT}`, `{ADMIN}` (the listeners),
//! `{IDP}`, `{JWKS}` (the mock IdP), `{UP}` (the recording upstream), `{TLS}` (the `tls:`
//! lines of `listen`, empty without TLS), `{ADMIN_TOKEN_FILE}`, and the fixture's own, named
//! in its comment here. A placeholder left unfilled fails the test, so a typo cannot start a
//! gateway on a half-rendered file. A test that varies a fixture says how, next to its
//! assertions (`.replace(...)`, a route appended).

/// `/mcp` needs `mcp:read`, `/admin/mcp` needs `admin`, `/open` has `auth: none`; public URL
/// `https://mcp.example.com` (TLS terminated in front, or `{TLS}`).
pub const STANDARD: &str = include_str!("../fixtures/standard.yaml");
/// One issuer found by discovery (no `jwks_uri`), `{ISSUER}`: further lines of its entry,
/// indented 4 (`scope_claims`, `ca_file`); `/mcp` needs `mcp:read`.
pub const ISSUER_SETTINGS: &str = include_str!("../fixtures/issuer_settings.yaml");
/// Legacy API keys: `/mcp` accepts OAuth or keys (sunset announced), `/legacy` keys only,
/// `/oauth` OAuth only, `/gone` past its sunset. `{KEYS}`: the key file.
pub const API_KEYS: &str = include_str!("../fixtures/api_keys.yaml");
/// `/open` (`auth: none`), `/mcp` (OAuth), short deadlines and small caps. `{HEAD_TIMEOUT}`,
/// `{IDLE_TIMEOUT}` (seconds), `{PER}`, `{TOTAL}` (connection caps).
pub const CONN_LIMITS: &str = include_str!("../fixtures/conn_limits.yaml");
/// The red team's findings after issues 13 and 21: `/mcp` (OAuth, a tool policy: bodies
/// inspected), `/open` (`auth: none`: bodies streamed). `{HEAD_TIMEOUT}`, `{BODY_TIMEOUT}`,
/// `{SEND_TIMEOUT}`, `{TLS_TIMEOUT}` (seconds), `{STREAMS}` (per HTTP/2 connection), `{PER}`,
/// `{TOTAL}` (the caps, in places).
pub const REDTEAM: &str = include_str!("../fixtures/redteam.yaml");
/// DPoP at `/mcp` (allowed), `/strict/mcp` (required), `/nonce/mcp` (required, with server
/// nonces), `/plain/mcp` (disabled).
pub const DPOP: &str = include_str!("../fixtures/dpop.yaml");
/// The DPoP fixture's `/mcp` route alone, with `{PUBLIC}` as the public URL.
pub const DPOP_PUBLIC: &str = include_str!("../fixtures/dpop_public.yaml");
/// Rate limits (issue 19): `/mcp` (OAuth), `/open` (`auth: none`); `{LIMITS}`: the lines under
/// `limits:` (indented 2), `{STATE}`: a `state:` block or nothing, `{ROUTES}`: further routes.
pub const LIMITS: &str = include_str!("../fixtures/limits.yaml");
/// Issue 13's request side: `/mcp` (tools, resources, prompts, default deny), `/allow`,
/// `/other` (no policy), `/keys` (API keys, `{KEYS}`), `/open`; TLS.
pub const FAILCLOSED_REQUEST: &str = include_str!("../fixtures/failclosed_request.yaml");
/// Issue 13's response side: `/mcp` (policy, `filter_tools_list`), `/plain`; clock skew 0;
/// an admin token.
pub const FAILCLOSED_RESPONSE: &str = include_str!("../fixtures/failclosed_response.yaml");
/// `/open`, `/down` (nothing listens: `{DOWN}`), `/hang` (a TLS upstream that never answers:
/// `{HANG}`), and a small body limit.
pub const FAILURES: &str = include_str!("../fixtures/failures.yaml");
/// One `/mcp` route in front of the Flask upstream, `delete_*` needing `mcp:admin`.
pub const FLASK: &str = include_str!("../fixtures/flask.yaml");
/// `/mcp` on the virtual host `mcp.example.com` needs a token; `/mcp` on any other host is
/// open.
pub const HOSTS: &str = include_str!("../fixtures/hosts.yaml");
/// Issuer `local` (JWKS) and issuer `live` (the same `iss`, every token introspected at
/// `{EP}`), a route for each.
pub const JWKS_AND_LIVE: &str = include_str!("../fixtures/jwks_and_live.yaml");
/// One JWT issuer with introspection settings (`{EP}`, `require_aud: false`) and
/// `token_format: jwt`.
pub const JWT_WITH_INTROSPECTION: &str = include_str!("../fixtures/jwt_with_introspection.yaml");
/// One issuer with loose settings (no `at+jwt`, 600 s skew, ES256 and RS256).
pub const LOOSE: &str = include_str!("../fixtures/loose.yaml");
/// MCP-aware authorization: `/mcp` (ordered tool/resource/prompt globs, `tools/list`
/// filtering, one allowed origin), `/strict` (default deny), `/plain` (no policy).
/// `{SKEW}`: the issuer's clock skew.
pub const MCP: &str = include_str!("../fixtures/mcp.yaml");
/// MCP 2026-07-28 in front of older servers (issue 17): `/mcp` (a tool policy) and `/plain`
/// (no policy), the default inspection limit (1 MiB); TLS (`{TLS}`).
pub const MCP2026: &str = include_str!("../fixtures/mcp2026.yaml");
/// Issuer `as` verifies its JWTs locally and introspects its opaque tokens at `{EP}`; issuer
/// `legacy` (`{AS}`) is opaque only.
pub const MIXED: &str = include_str!("../fixtures/mixed.yaml");
/// One issuer (`{AS}`) whose tokens are all introspected at `{EP}` (no key set), `/mcp` and
/// `/admin/mcp`. `{INTRO}`: extra introspection settings, one per line, indented 6.
pub const OPAQUE: &str = include_str!("../fixtures/opaque.yaml");
/// Operations: `/mcp` (a tool policy), `/plain`, and `/probe`, whose metadata advertises
/// `gen-{GEN}` so a test can see which config is serving. `{MAXHDR}`, `{MAXBODY}`: limits.
pub const OPS: &str = include_str!("../fixtures/ops.yaml");
/// Every refusal the gateway can be driven to: a tool policy with default deny, a dead
/// introspection endpoint and upstream (`{DOWN}`), small limits, an admin token.
pub const REFUSALS: &str = include_str!("../fixtures/refusals.yaml");
/// `/admin` needs `admin`, `/mcp` needs `mcp:read`, `/` is open; browsers from
/// `https://app.example` may call all three. `{ADMIN_EXTRA}` adds keys to the admin route.
pub const ROUTES: &str = include_str!("../fixtures/routes.yaml");
/// Scale-out replicas sharing Redis (`{REDIS}` port, `{PREFIX}`, `{TIMEOUT}` ms,
/// `{REDIS_EXTRA}` lines under `state.redis`, `{STATE}` lines under `state`).
pub const SCALEOUT: &str = include_str!("../fixtures/scaleout.yaml");
/// A replica on Redis over TLS with a password (`{REDIS_URL}`, `{REDIS_CA}`).
pub const SCALEOUT_REDISS: &str = include_str!("../fixtures/scaleout_rediss.yaml");
/// Two issuer entries sharing one `issuer`: `prod` (RFC 9068 only) and `staging`
/// (`{STAGING_JWKS}`), a route for each and one for both.
pub const TWO_ENTRIES: &str = include_str!("../fixtures/two_entries.yaml");
/// Upstream credentials: `/mcp` (OAuth, `mcp:read`) with `upstream_auth` lines `{UA}`, `/open`
/// (`auth: none`) with `{OPEN_UA}` (each indented 6); an admin token.
pub const UPSTREAM_AUTH: &str = include_str!("../fixtures/upstream_auth.yaml");
/// `/secure` in front of a TLS upstream on `{UPSTREAM_PORT}`, `{UPSTREAM_TLS}`: its
/// `upstream_tls` lines.
pub const UPSTREAM_TLS: &str = include_str!("../fixtures/upstream_tls.yaml");
/// `/mcp` with an admin token and a 60 s clock skew.
pub const WITH_ADMIN: &str = include_str!("../fixtures/with_admin.yaml");

/// A route for the end of a fixture's `routes:` list: `name`, `path_prefix`, the fixture's
/// upstream (`{UP}`), and `keys` (`key: value` each; a nested block as several lines, its
/// inner lines indented two more).
pub fn route(name: &str, prefix: &str, keys: &[&str]) -> String {
    route_to(name, prefix, "{UP}", keys)
}

/// [`route`] to another upstream.
pub fn route_to(name: &str, prefix: &str, upstream: &str, keys: &[&str]) -> String {
    let mut out =
        format!("  - name: {name}\n    path_prefix: {prefix}\n    upstream: {upstream}\n");
    for k in keys {
        for line in k.lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    out
}

/// Fills every `{NAME}` of `vars` in `template`; panics if a placeholder is left.
pub fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    if let Some(left) = placeholders(&out).first() {
        panic!("placeholder {{{left}}} left unfilled in:\n{out}");
    }
    out
}

/// The `{NAME}` placeholders (capitals, digits, `_`) of a text; `${NAME}` is the gateway's own
/// environment expansion, not a placeholder.
fn placeholders(text: &str) -> Vec<&str> {
    text.match_indices('{')
        .filter(|(i, _)| !text[..*i].ends_with('$'))
        .filter_map(|(i, _)| {
            let rest = &text[i + 1..];
            let end = rest.find('}')?;
            let name = &rest[..end];
            let ok = !name.is_empty()
                && name.starts_with(|c: char| c.is_ascii_uppercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            ok.then_some(name)
        })
        .collect()
}
