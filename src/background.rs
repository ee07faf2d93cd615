//! Side work: the small dedicated runtime every outbound HTTP call runs on (JWKS fetches,
//! introspection, metadata discovery) and the HTTP client with its bounds.
//!
//! One runtime, so the reqwest connection pool is never shared across pingora's
//! per-service runtimes, and no request-path worker ever blocks on the network for side
//! work. Also where the gateway's own background tasks (signal handlers) run.

use std::sync::Arc;
use std::time::Duration;

/// Deadline of one outbound fetch (a JWKS, a metadata document).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of connecting to an authorization server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest document fetched: a JWKS or a metadata document is a few kilobytes.
const MAX_BODY: usize = 1024 * 1024;
/// Redirects followed (same origin only).
const MAX_REDIRECTS: usize = 3;

/// The outbound HTTP client and the runtime it lives on.
pub struct Fetcher {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Fetcher {
    pub fn new() -> Result<Arc<Fetcher>, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mcpgate-fetch")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start fetch runtime: {e}"))?;
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                // Follow at most 3 redirects, and only on the same host and scheme.
                // Same origin only: scheme, host and port.
                let same = attempt
                    .previous()
                    .first()
                    .is_some_and(|first| first.origin() == attempt.url().origin());
                if attempt.previous().len() > MAX_REDIRECTS || !same {
                    attempt.stop()
                } else {
                    attempt.follow()
                }
            }))
            .user_agent(concat!("mcpgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        Ok(Arc::new(Fetcher { runtime, client }))
    }

    /// Run a future on the fetch runtime and await it from any runtime.
    pub async fn run<F, T>(&self, fut: F) -> Option<T>
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.runtime.spawn(fut).await.ok()
    }

    pub fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.runtime.spawn(fut);
    }

    pub fn client(&self) -> reqwest::Client {
        self.client.clone()
    }
}

/// GET a JSON document with a size cap. Returns the body and the Cache-Control max-age.
pub async fn get_json(
    client: &reqwest::Client,
    url: &str,
) -> Result<(Vec<u8>, Option<u64>), String> {
    let mut resp = client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", resp.status().as_u16()));
    }
    let max_age = resp
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_max_age);
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("GET {url}: body larger than {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, max_age))
}

fn parse_max_age(cc: &str) -> Option<u64> {
    cc.split(',').find_map(|d| {
        let d = d.trim();
        let v = d
            .strip_prefix("max-age=")
            .or_else(|| d.strip_prefix("s-maxage="))?;
        v.trim_matches('"').parse().ok()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn max_age_parsing() {
        assert_eq!(parse_max_age("public, max-age=600"), Some(600));
        assert_eq!(parse_max_age("no-cache"), None);
        assert_eq!(parse_max_age("s-maxage=30, max-age=10"), Some(30));
    }
}
