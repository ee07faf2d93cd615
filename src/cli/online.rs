//! `mcpgate check --online`: after the offline checks, ask each issuer what the gateway will
//! ask it, with the gateway's own functions and HTTP client (its `ca_file`, timeouts and
//! redirect rule): the metadata documents (when `jwks_uri` or the introspection endpoint is
//! discovered), the key set, and the introspection endpoint. Each step prints `ok` or `FAIL`
//! with the precise cause: DNS, connect, TLS with the certificate problem, HTTP status, not
//! JSON, issuer mismatch, no usable key.

use std::sync::Arc;

use crate::auth::discovery;
use crate::auth::introspect::{self, Failure, Outcome};
use crate::auth::issuer::IssuerConfig;
use crate::auth::jwks::fetch_key_set;
use crate::background::http_client;
use crate::config::Config;

/// The token sent to the introspection endpoint: not a token of anyone, so a working
/// endpoint that accepts the gateway's credentials answers `{"active": false}`.
const PROBE_TOKEN: &str = "mcpgate-check-online-probe";

/// Run the online checks of every issuer, printing one line per step; false when a step
/// failed.
pub fn run(config: &Config) -> bool {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            println!("FAIL cannot start a runtime for the online checks: {e}");
            return false;
        }
    };
    let mut failures = 0;
    for ic in &config.issuers {
        println!("issuer {:?} ({}):", &*ic.name, ic.issuer);
        let mut report = Report::default();
        runtime.block_on(check_issuer(ic, &mut report));
        failures += report.failures;
    }
    if config.issuers.is_empty() {
        println!("no issuers: nothing to check online");
    }
    if failures == 0 {
        println!("online: all checks passed");
        true
    } else {
        println!("online: {failures} check(s) failed");
        false
    }
}

#[derive(Default)]
struct Report {
    failures: usize,
}

impl Report {
    fn ok(&mut self, what: &str) {
        println!("  ok    {what}");
    }
    fn fail(&mut self, what: &str) {
        self.failures += 1;
        println!("  FAIL  {what}");
    }
    fn note(&mut self, what: &str) {
        println!("  --    {what}");
    }
}

async fn check_issuer(ic: &Arc<IssuerConfig>, r: &mut Report) {
    let client = match http_client(ic.ca.as_ref()) {
        Ok(c) => c,
        Err(e) => return r.fail(&e),
    };
    let introspection = ic.introspection.as_ref();
    // DNS first, for every host the config names: a name that does not resolve is said
    // as such (a fetch would report it as a connect or TLS error).
    let mut urls = vec![ic.issuer.to_string()];
    urls.extend(ic.jwks_uri.clone());
    urls.extend(introspection.and_then(|i| i.endpoint.clone()));
    let mut resolved = true;
    let mut seen = Vec::new();
    for u in urls {
        let Ok(u) = url::Url::parse(&u) else { continue };
        let Some(url::Host::Domain(host)) = u.host().map(|h| h.to_owned()) else {
            continue;
        };
        if seen.contains(&host.to_string()) {
            continue;
        }
        seen.push(host.to_string());
        let port = u.port_or_known_default().unwrap_or(443);
        let answer = tokio::net::lookup_host(format!("{host}:{port}")).await;
        match answer {
            Ok(addrs) => {
                let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
                ips.dedup();
                r.ok(&format!("DNS {host}: {}", ips.join(" ")));
            }
            Err(e) => {
                resolved = false;
                r.fail(&format!("DNS {host}: the host does not resolve ({e})"));
            }
        }
    }
    if !resolved {
        return r.note("metadata, JWKS and introspection not checked (DNS failed)");
    }
    let need_jwks = ic.uses_jwks() && ic.jwks_uri.is_none();
    let need_introspection = introspection.is_some_and(|i| i.endpoint.is_none());
    let mut metadata = None;
    if need_jwks || need_introspection {
        metadata = fetch_metadata(&client, &ic.issuer, r).await;
    } else {
        r.note("metadata: not needed (every endpoint is configured)");
    }
    if ic.uses_jwks() {
        let uri = match (&ic.jwks_uri, &metadata) {
            (Some(u), _) => Some(u.clone()),
            (None, Some((doc, url))) => match discovery::endpoint_of(doc, url, "jwks_uri") {
                Ok(u) => Some(u),
                Err(e) => {
                    r.fail(&format!("jwks_uri: {e}"));
                    None
                }
            },
            (None, None) => {
                r.fail("JWKS: not checked (its URL comes from the metadata)");
                None
            }
        };
        if let Some(uri) = uri {
            match fetch_key_set(&client, &uri, &ic.algorithms).await {
                Ok((keys, skipped, _)) => {
                    let kids: Vec<String> = keys
                        .iter()
                        .map(|k| {
                            format!(
                                "{} {}",
                                k.kid.as_deref().unwrap_or("(no kid)"),
                                k.alg.name()
                            )
                        })
                        .collect();
                    r.ok(&format!(
                        "JWKS {uri}: {} usable key(s): {}",
                        keys.len(),
                        kids.join(", ")
                    ));
                    for s in skipped {
                        r.note(&format!("JWKS {s}"));
                    }
                }
                Err(e) => r.fail(&format!("JWKS: {e}")),
            }
        }
    }
    if let Some(config) = introspection {
        let endpoint = match (&config.endpoint, &metadata) {
            (Some(e), _) => Some(e.clone()),
            (None, Some((doc, url))) => {
                match discovery::endpoint_of(doc, url, "introspection_endpoint") {
                    Ok(u) => Some(u),
                    Err(e) => {
                        r.fail(&format!("introspection: {e}"));
                        None
                    }
                }
            }
            (None, None) => {
                r.fail("introspection: not checked (its endpoint comes from the metadata)");
                None
            }
        };
        if let Some(endpoint) = endpoint {
            check_introspection(ic, &client, &endpoint, r).await;
        }
    }
}

/// The metadata documents in the order the gateway tries them; the first accepted one
/// (and its URL). A failed document before an accepted one is noted, not failed: the
/// gateway moves on to the next one too.
async fn fetch_metadata(
    client: &reqwest::Client,
    issuer: &str,
    r: &mut Report,
) -> Option<(serde_json::Value, String)> {
    let urls = match discovery::metadata_urls(issuer) {
        Ok(u) => u,
        Err(e) => {
            r.fail(&e);
            return None;
        }
    };
    let mut errors = Vec::new();
    for url in urls {
        match discovery::fetch_metadata(client, &url, issuer).await {
            Ok(doc) => {
                for e in errors {
                    r.note(&format!("metadata: {e} (the next document is tried)"));
                }
                r.ok(&format!("metadata {url}: issuer matches"));
                return Some((doc, url));
            }
            Err(e) => errors.push(e),
        }
    }
    for e in errors {
        r.fail(&format!("metadata: {e}"));
    }
    None
}

/// POST a probe token with the gateway's credentials, through the gateway's own call and
/// judgement: an inactive answer means reachable and credentials accepted.
async fn check_introspection(
    ic: &IssuerConfig,
    client: &reqwest::Client,
    endpoint: &str,
    r: &mut Report,
) {
    let Some(issuer) = ic.introspected() else {
        return;
    };
    let answer = introspect::post(
        client.clone(),
        endpoint.to_string(),
        issuer.config.clone(),
        PROBE_TOKEN.to_string(),
    )
    .await
    .and_then(|(status, body)| {
        introspect::evaluate(status, &body, &issuer, crate::clock::now_unix())
    });
    match answer {
        Ok(Outcome::Refused(..)) => r.ok(&format!(
            "introspection {endpoint}: reachable, the gateway's credentials are accepted \
             (a probe token is inactive)"
        )),
        Ok(Outcome::Active(..)) => r.fail(&format!(
            "introspection {endpoint}: a made-up probe token was answered active: this is \
             not a working RFC 7662 endpoint"
        )),
        Err(Failure::Unauthorized(s)) => r.fail(&format!(
            "introspection {endpoint}: reachable, but HTTP {s}: the AS refuses the gateway's \
             client credentials (client_id {:?}, {})",
            issuer.config.client_id,
            match issuer.config.auth_method {
                introspect::ClientAuth::ClientSecretBasic => "client_secret_basic",
                introspect::ClientAuth::ClientSecretPost => "client_secret_post",
            }
        )),
        Err(Failure::Status(s)) => r.fail(&format!("introspection {endpoint}: HTTP status {s}")),
        Err(Failure::NotJson) => r.fail(&format!(
            "introspection {endpoint}: the answer is not a JSON object"
        )),
        Err(e) => r.fail(&format!("introspection {endpoint}: {e}")),
    }
}
