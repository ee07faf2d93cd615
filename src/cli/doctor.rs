//! `mcpgate doctor --route NAME --token FILE`: why that token would be accepted or refused
//! on that route, check by check, never printing the token.
//!
//! The verdict is the gateway's own: the token step ([`Authenticator::authenticate`], with
//! the route's issuer entries, their key stores and introspection clients), then the
//! principal step ([`steps::principal`]: audience, subject), the route's scopes
//! ([`policy::check_scopes`]) and each tool rule ([`policy::tool_allowed`]). The lines
//! before it explain that verdict with the same functions the token step is made of
//! ([`jwt::parse`], [`jwt::check_typ`], [`jwt::verify_signature`], [`jwt::check_times`],
//! [`token::scope_claims`], [`jwt::cnf_jkt`], [`check_audience`]), each with the expected
//! and the actual value. Revocations and DPoP proofs belong to a request and a running
//! gateway: they are noted, not judged.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::auth::credentials::{self, Credentials};
use crate::auth::dpop::{self, ProofRequest};
use crate::auth::issuer::{IssuerConfig, TokenFormat};
use crate::auth::jwt::{self, KeyMiss};
use crate::auth::revocation::Revocations;
use crate::auth::{check_audience, token, AuthMode, Authenticator, Issuers, Presented};
use crate::background::Fetcher;
use crate::clock::now_unix;
use crate::config::{Config, Route};
use crate::mcp::policy::{self, DefaultPolicy};
use crate::principal::{hash_prefix, token_hash, Principal};
use crate::proxy::steps;

pub struct Args {
    pub config: PathBuf,
    pub route: String,
    pub token_file: PathBuf,
}

/// Explain, then exit 0 when the token would be accepted on the route, 1 when refused (or
/// when the config, the route or the token file is wrong).
pub fn run(args: Args) -> ExitCode {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(route) = config.routes.iter().find(|r| *r.name == *args.route) else {
        let names = config.routes.iter().map(|r| &*r.name);
        let hint = crate::compile::closest(&args.route, config.routes.iter().map(|r| &*r.name))
            .map(|c| format!(" (did you mean {c:?}?)"))
            .unwrap_or_default();
        eprintln!(
            "route {:?} is not configured{hint}; the routes are: {}",
            args.route,
            crate::compile::list_names(names)
        );
        return ExitCode::FAILURE;
    };
    let token = match std::fs::read_to_string(&args.token_file) {
        // A token file usually ends with a newline; the token itself never has whitespace.
        Ok(t) => t.trim_end_matches(['\n', '\r']).to_string(),
        Err(e) => {
            eprintln!("{}: {e}", args.token_file.display());
            return ExitCode::FAILURE;
        }
    };
    let fetcher = match Fetcher::new() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // No background refresh: the token step fetches the keys it needs on first use.
    let issuers = Issuers::build(&config.issuers, &[], 16, None, &fetcher);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let accepted = runtime.block_on(doctor(&config, route, &issuers, &token));
    // The runtimes are dropped here, outside any async context.
    drop(runtime);
    drop(issuers);
    drop(fetcher);
    if accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[derive(Default)]
struct Out {
    failed: bool,
}

impl Out {
    fn ok(&mut self, what: &str) {
        println!("  ok    {what}");
    }
    fn fail(&mut self, what: &str) {
        self.failed = true;
        println!("  FAIL  {what}");
    }
    fn note(&mut self, what: &str) {
        println!("  --    {what}");
    }
    fn check(&mut self, good: bool, what: &str) {
        if good {
            self.ok(what)
        } else {
            self.fail(what)
        }
    }
}

async fn doctor(config: &Config, route: &Route, issuers: &Issuers, token: &str) -> bool {
    let now = now_unix();
    let hash = token_hash(token);
    println!(
        "route {:?} ({}), token sha256:{}…, {} bytes, now {now}:",
        &*route.name,
        route.auth.mode.as_str(),
        hash_prefix(&hash),
        token.len()
    );
    let mut out = Out::default();
    match route.auth.mode {
        AuthMode::None => {
            out.ok("auth: none: the route takes no credentials; every request passes this step");
            return true;
        }
        AuthMode::ApiKey => {
            out.fail("auth: api_key: the route takes API keys only, no Bearer or DPoP token");
            return false;
        }
        AuthMode::Oauth | AuthMode::Both => {}
    }
    // Header: the token as `Authorization: Bearer <token>`, through the credentials step.
    let mut headers = http::HeaderMap::new();
    match http::HeaderValue::from_str(&format!("Bearer {token}")) {
        Ok(v) => {
            headers.insert(http::header::AUTHORIZATION, v);
        }
        Err(_) => {
            out.fail("header: the token holds bytes no HTTP header may carry");
            return false;
        }
    }
    match credentials::extract(&headers, None) {
        Ok(Credentials::Bearer(_)) => {
            out.ok("header: Authorization: Bearer <token> is well formed (RFC 6750 b64token)")
        }
        Ok(_) => out.fail("header: not read as a Bearer token"),
        Err(e) => {
            out.fail(&format!("header: {}", e.describe()));
            return false;
        }
    }
    // The verdict of the token step, exactly as the gateway reaches it.
    let verdict = Authenticator::new(16)
        .authenticate(issuers, &route.auth.issuers, token, &hash)
        .await;
    explain_token(config, route, issuers, token, now, &mut out);
    let p = match verdict {
        Ok(p) => {
            out.ok(&format!(
                "token step: accepted by issuer {:?}",
                &*p.issuer_name
            ));
            p
        }
        Err(r) => {
            out.fail(&format!(
                "token step: refused: HTTP {} {}: {}",
                r.status(),
                r.code(),
                r.description()
            ));
            return false;
        }
    };
    route_checks(config, route, &p, now, &mut out);
    println!(
        "verdict: {}",
        if out.failed { "refused" } else { "accepted" }
    );
    !out.failed
}

/// The token, claim by claim, against each of the route's issuer entries.
fn explain_token(
    config: &Config,
    route: &Route,
    issuers: &Issuers,
    token: &str,
    now: i64,
    out: &mut Out,
) {
    let entries: Vec<(usize, &Arc<IssuerConfig>)> = route
        .auth
        .issuers
        .iter()
        .map(|&i| (i, &config.issuers[i]))
        .collect();
    let parsed = match jwt::parse(token) {
        Ok(p) => p,
        Err(e) => {
            match entries.iter().find(|(_, ic)| ic.introspection.is_some()) {
                Some((_, ic)) => out.note(&format!(
                    "not a JWT we can read ({}): introspected by issuer {:?} (its answer is the verdict below)",
                    e.0, &*ic.name
                )),
                None => out.fail(&format!(
                    "token: {} (and no issuer of the route introspects opaque tokens)",
                    e.0
                )),
            }
            return;
        }
    };
    out.ok(&format!(
        "JWT header: alg {}, kid {}, typ {}",
        parsed.alg.name(),
        show(parsed.kid.as_deref()),
        show(parsed.typ.as_deref())
    ));
    let c = &parsed.claims;
    let expected: Vec<String> = entries
        .iter()
        .map(|(_, ic)| format!("{:?} ({})", &*ic.issuer, &*ic.name))
        .collect();
    let iss = c.iss.as_deref();
    let matching: Vec<&(usize, &Arc<IssuerConfig>)> = entries
        .iter()
        .filter(|(_, ic)| Some(&*ic.issuer) == iss)
        .collect();
    out.check(
        !matching.is_empty(),
        &format!(
            "iss: expected one of {}, actual {}",
            expected.join(", "),
            show(iss)
        ),
    );
    for (i, ic) in matching {
        println!("  issuer entry {:?}:", &*ic.name);
        if ic.token_format == TokenFormat::Opaque {
            out.note("token_format: opaque: the token is introspected, not verified locally");
            continue;
        }
        let algs: Vec<&str> = ic.algorithms.iter().map(|a| a.name()).collect();
        out.check(
            ic.algorithms.contains(&parsed.alg),
            &format!(
                "alg: expected one of {}, actual {}",
                algs.join(" "),
                parsed.alg.name()
            ),
        );
        match jwt::check_typ(parsed.typ.as_deref(), ic.require_at_jwt) {
            Ok(()) => out.ok(&format!(
                "typ: {} (require_at_jwt: {})",
                show(parsed.typ.as_deref()),
                ic.require_at_jwt
            )),
            Err(e) => out.fail(&format!(
                "typ: {} (require_at_jwt: {})",
                e.0, ic.require_at_jwt
            )),
        }
        match issuers.keys[*i].snapshot() {
            Err(why) => out.fail(&format!(
                "keys: the issuer's key set is unavailable ({why:?})"
            )),
            Ok(snap) => {
                let have: Vec<String> = snap
                    .keys
                    .iter()
                    .map(|k| format!("{} {}", show(k.kid.as_deref()), k.alg.name()))
                    .collect();
                match jwt::verify_signature(&parsed, &snap.keys) {
                    Ok(()) => out.ok(&format!(
                        "signature: verified with key {} {}",
                        show(parsed.kid.as_deref()),
                        parsed.alg.name()
                    )),
                    Err(KeyMiss::NoKey) => out.fail(&format!(
                        "key: no key for kid {} and alg {}; the key set has: {}",
                        show(parsed.kid.as_deref()),
                        parsed.alg.name(),
                        have.join(", ")
                    )),
                    Err(KeyMiss::BadSignature) => out.fail(&format!(
                        "signature: invalid for key {} {} (signed by another key, or altered)",
                        show(parsed.kid.as_deref()),
                        parsed.alg.name()
                    )),
                }
            }
        }
        let skew = ic.clock_skew as i64;
        let date = |n: &Option<serde_json::Number>, what| {
            n.as_ref()
                .map(|n| jwt::numeric_date(n, what).map_err(|e| e.0))
                .transpose()
        };
        match date(&c.exp, "token exp is not a valid NumericDate") {
            Ok(Some(exp)) => out.check(
                jwt::check_times(exp, None, None, skew, now).is_ok(),
                &format!("exp: {exp} must be ≥ now − skew ({})", now - skew),
            ),
            Ok(None) => out.fail("exp: required, absent"),
            Err(e) => out.fail(&format!("exp: {e}")),
        }
        for (name, v, what) in [
            ("nbf", &c.nbf, "token nbf is not a valid NumericDate"),
            ("iat", &c.iat, "token iat is not a valid NumericDate"),
        ] {
            match date(v, what) {
                Ok(None) => out.ok(&format!("{name}: absent (optional)")),
                Ok(Some(t)) => {
                    let (nbf, iat) = if name == "nbf" {
                        (Some(t), None)
                    } else {
                        (None, Some(t))
                    };
                    out.check(
                        jwt::check_times(i64::MAX / 2, nbf, iat, skew, now).is_ok(),
                        &format!("{name}: {t} must be ≤ now + skew ({})", now + skew),
                    )
                }
                Err(e) => out.fail(&format!("{name}: {e}")),
            }
        }
        if ic.require_at_jwt {
            let client = c.client_id.as_deref().or(c.azp.as_deref());
            for (name, present) in [
                ("sub", c.sub.is_some()),
                ("client_id", client.is_some()),
                ("iat", c.iat.is_some()),
                ("jti", c.jti.is_some()),
            ] {
                out.check(
                    present,
                    &format!(
                        "{name}: required by RFC 9068 (require_at_jwt), {}",
                        if present { "present" } else { "absent" }
                    ),
                );
            }
        }
        let names: Vec<&str> = ic.scope_claims.iter().map(|s| s.name()).collect();
        match token::scope_claims(c, &ic.scope_claims) {
            Ok(s) => out.ok(&format!(
                "scopes from [{}]: {}",
                names.join(", "),
                show(
                    Some(&crate::scope::merge(s))
                        .filter(|s| !s.is_empty())
                        .map(|s| s.as_str())
                )
            )),
            Err(e) => out.fail(&format!("scopes from [{}]: {}", names.join(", "), e.0)),
        }
        match jwt::cnf_jkt(c.cnf.as_ref()) {
            Ok(Some(jkt)) => out.note(&format!(
                "cnf.jkt {jkt}: DPoP-bound; it must be sent as Authorization: DPoP with a proof of that key"
            )),
            Ok(None) => out.ok("cnf: absent (a Bearer token)"),
            Err(e) => out.fail(&format!("cnf: {}", e.0)),
        }
        let aud: Vec<String> = c
            .aud
            .as_ref()
            .map(|a| a.iter().map(|s| format!("{s:?}")).collect())
            .unwrap_or_default();
        out.note(&format!(
            "aud: {} (checked against the route below)",
            if aud.is_empty() {
                "absent".to_string()
            } else {
                aud.join(", ")
            }
        ));
        for (name, v) in [
            ("sub", &c.sub),
            ("client_id", &c.client_id),
            ("azp", &c.azp),
        ] {
            if let Some(v) = v {
                out.note(&format!("{name}: {v:?}"));
            }
        }
    }
}

/// The route-level checks of the principal step and the MCP policy.
fn route_checks(config: &Config, route: &Route, p: &Principal, now: i64, out: &mut Out) {
    let aud: Vec<String> = route
        .resource
        .audiences
        .iter()
        .map(|a| format!("{a:?}"))
        .collect();
    let actual: Vec<String> = p.audiences.iter().map(|a| format!("{a:?}")).collect();
    let audience = check_audience(&route.resource.audiences, p);
    out.check(
        audience.is_ok(),
        &format!(
            "aud: expected one of {}, actual {}",
            aud.join(", "),
            if p.any_audience {
                "(any: introspected without aud)".to_string()
            } else {
                actual.join(", ")
            }
        ),
    );
    // The principal step itself (audience and subject; an empty revocation list here).
    let revocations = Revocations::new(&config.state, None);
    match steps::principal(&revocations, route, p, now) {
        Err(r) if audience.is_ok() => out.fail(&format!("principal step: {}", r.description())),
        _ => {}
    }
    out.note("revocations: not checked (they live in the running gateway: mcpgate revoke --list)");
    let required: Vec<&str> = route.auth.scopes.iter().map(|s| s.name.as_str()).collect();
    out.check(
        policy::check_scopes(&route.auth.scopes, p).is_ok(),
        &format!(
            "route scopes: required [{}], granted [{}]",
            required.join(" "),
            p.scopes.as_str()
        ),
    );
    for rule in &route.mcp.tools {
        let needs: Vec<&str> = rule.scopes.iter().map(|s| s.name.as_str()).collect();
        let allowed = policy::tool_allowed(&route.auth.scopes, &route.mcp, p, &rule.pattern);
        let line = format!(
            "tools {:?}: need [{}]: {}",
            rule.pattern,
            needs.join(" "),
            if allowed {
                "callable"
            } else {
                "refused (insufficient_scope)"
            }
        );
        // A tool the token cannot call is information, not a refusal of the token.
        if allowed {
            out.ok(&line)
        } else {
            out.note(&line)
        }
    }
    if !route.mcp.tools.is_empty() || route.mcp.default == DefaultPolicy::Deny {
        out.note(&format!(
            "other tools: {}",
            match route.mcp.default {
                DefaultPolicy::Allow => "the route's scopes suffice (default_tool_policy: allow)",
                DefaultPolicy::Deny => "refused (default_tool_policy: deny)",
            }
        ));
    }
    // DPoP: the token presented as Bearer, through the gateway's DPoP step.
    let no_headers = http::HeaderMap::new();
    let req = ProofRequest {
        method: "POST",
        headers: &no_headers,
        origin: &route.resource.public_origin,
        path: "/",
    };
    match dpop::authorize(&config.dpop, route.dpop, &req, p, Presented::Bearer, now) {
        Ok(_) => out.ok(&format!(
            "DPoP: a Bearer token, accepted as such (route dpop: {:?})",
            route.dpop.mode
        )),
        Err(r) if p.cnf_jkt.is_some() && route.dpop.mode != dpop::DpopMode::Disabled => {
            out.note(&format!(
                "DPoP: {}; the proof is judged per request, not here",
                r.description()
            ))
        }
        Err(r) => out.fail(&format!("DPoP: {}", r.description())),
    }
}

fn show(v: Option<&str>) -> String {
    match v {
        Some(s) => format!("{s:?}"),
        None => "(absent)".to_string(),
    }
}
