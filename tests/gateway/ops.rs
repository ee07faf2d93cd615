//! Operations (issue 5): hot reload under load (Kubernetes `..data` symlink swaps, editor
//! renames, in-place writes, invalid files), SIGHUP, settings that only apply on restart, TLS
//! termination with h2 and http/1.1 and certificate rotation, Prometheus metrics, SIGTERM
//! draining, request limits, and logs that never carry a token.
//!
//! The TLS test makes its CA and server certificates at run time with the `openssl` command.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;
use crate::mcp::padded_call;

const R_PLAIN: &str = "https://mcp.example.com/plain";

/// The IdP and upstream of a test; the gateway is started on the [`OPS`] fixture rendered for
/// them ([`Fixture::render`]), and re-rendered to rewrite its config.
struct Fixture {
    idp: MockIdp,
    up: Upstream,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            idp: MockIdp::start(),
            up: echo_upstream(),
        }
    }

    /// The OPS config for generation `gen`, with default limits.
    fn render(&self, port: u16, admin: u16, gen: usize) -> String {
        self.render_with(port, admin, gen, 32 * 1024, 10 * 1024 * 1024)
    }

    fn render_with(&self, port: u16, admin: u16, gen: usize, hdr: usize, body: usize) -> String {
        render(
            &self.idp.issuer(),
            &self.idp.jwks_uri(),
            &self.up.url(),
            port,
            admin,
            gen,
            hdr,
            body,
        )
    }

    fn tok(&self, scope: &str) -> String {
        mint(
            Tok::new(&self.idp.issuer(), R)
                .c("aud", json!([R, R_PLAIN]))
                .scope(scope),
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn render(
    issuer: &str,
    jwks: &str,
    up: &str,
    port: u16,
    admin: u16,
    gen: usize,
    hdr: usize,
    body: usize,
) -> String {
    let (port, admin, gen, hdr, body) = (
        port.to_string(),
        admin.to_string(),
        gen.to_string(),
        hdr.to_string(),
        body.to_string(),
    );
    crate::harness::render(
        OPS,
        &[
            ("PORT", &port),
            ("ADMIN", &admin),
            ("GEN", &gen),
            ("IDP", issuer),
            ("JWKS", jwks),
            ("UP", up),
            ("MAXHDR", &hdr),
            ("MAXBODY", &body),
        ],
    )
}

/// Starts the gateway, laid out as `layout`, on the config `config(port, admin)`.
async fn start(layout: Layout, config: impl Fn(u16, u16) -> String) -> Gateway {
    let opts = Launch {
        layout,
        ..Launch::default()
    };
    Gateway::launch(opts, config).await
}

/// Answers with a small JSON body; paths ending in `/sse` get 8 events, 300 ms apart.
fn echo_upstream() -> Upstream {
    Upstream::with(|req: &Request| {
        if req.path().ends_with("/sse") {
            return Reply::sse(
                (0..8)
                    .map(|i| format!("data: {{\"n\":{i}}}\n\n").into_bytes())
                    .collect(),
                Duration::from_millis(300),
            );
        }
        Reply::json_bytes(format!(r#"{{"ok":true,"target":{:?}}}"#, req.target).as_bytes())
    })
}

/// The `gen-N` marker the `/probe` metadata currently advertises.
async fn served_generation(addr: std::net::SocketAddr) -> Option<usize> {
    let r = send_to(
        addr,
        &Req::get("/.well-known/oauth-protected-resource/probe"),
    )
    .await
    .ok()?;
    if r.status != 200 {
        return None;
    }
    let v: Value = serde_json::from_slice(&r.body).ok()?;
    v["scopes_supported"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find_map(|s| s.strip_prefix("gen-"))
        .and_then(|n| n.parse().ok())
}

fn reload_gauge(ex: &Exposition) -> Option<f64> {
    ex.get("mcpgate_config_last_reload_successful", &[])
}

/// Invalid variants of a config, each rejected for a different reason.
fn invalid(valid: &str, n: usize) -> String {
    match n % 6 {
        0 => valid.replace("routes:", "routes: ["),
        1 => valid.replace(
            "    scopes: [probe:read]",
            "    scopes: [probe:read]\n    colour: blue",
        ),
        2 => valid.replace(
            "    scopes: [probe:read]",
            "    scopes: [probe:read]\n    issuers: [nobody]",
        ),
        3 => format!("# attempt {n}\n"),
        4 => valid[..valid.len() / 2].to_string(),
        _ => valid.replace("max_body_bytes: ", "max_body_bytes: -"),
    }
}

#[derive(Clone, Copy, Debug)]
enum Write {
    Kube,
    Rename,
    InPlace,
}

// ---------------------------------------------------------------------------------------------
// Hot reload
// ---------------------------------------------------------------------------------------------

/// A client loop sends requests the whole time while the config is rewritten 100 times,
/// alternating valid and invalid files, through Kubernetes `..data` symlink swaps, editor-style
/// write-and-rename and in-place writes: no request fails, each valid change is served within a
/// second, each invalid one is rejected (gauge 0, old config still serving) until the next valid
/// one (gauge 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_with_symlink_swaps_renames_and_invalid_files() {
    let fx = Fixture::new();
    let mut gw = start(Layout::Kube, |p, a| fx.render(p, a, 0)).await;
    let token = fx.tok("mcp:read");
    assert_eq!(served_generation(gw.addr()).await, Some(0));

    // The load: two clients on fresh connections until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut loops = Vec::new();
    for _ in 0..2 {
        let (stop, ok, failures, token, addr) = (
            stop.clone(),
            ok.clone(),
            failures.clone(),
            token.clone(),
            gw.addr(),
        );
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match send_to(addr, &Req::post("/mcp").bearer(&token)).await {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{} {}", r.status, r.text())),
                    Err(e) => failures.lock().unwrap().push(e),
                }
                // Fresh connections each time: the load's pacing stays well clear of
                // ephemeral-port exhaustion.
                pace(Duration::from_millis(4)).await;
            }
        }));
    }

    let (port, admin) = (gw.port, gw.admin_port);
    let jwks_fetches = fx.idp.jwks_fetches();
    let mut gen = 0;
    let mut slowest = Duration::ZERO;
    for i in 0..100 {
        // Pairs (valid, invalid) per method; in-place writes follow a rename, so they hit a
        // regular file; the next Kubernetes swap turns config.yaml back into a symlink.
        let how = match (i / 2) % 3 {
            0 => Write::Kube,
            1 => Write::Rename,
            _ => Write::InPlace,
        };
        let errors_before = gw
            .metrics()
            .await
            .value("mcpgate_config_reloads_total", &[("result", "error")]);
        let text = if i % 2 == 0 {
            fx.render(port, admin, gen + 1)
        } else {
            invalid(&fx.render(port, admin, gen), i)
        };
        match how {
            Write::Kube => gw.kube_swap(&text),
            Write::Rename => gw.write_rename(&text),
            Write::InPlace => gw.write_in_place(&text),
        }
        if i % 2 == 0 {
            gen += 1;
            let addr = gw.addr();
            let took = within(Duration::from_secs(1), || async move {
                served_generation(addr).await == Some(gen)
            })
            .await
            .unwrap_or_else(|t| {
                panic!("write {i} ({how:?}): valid generation {gen} not served after {t:?}")
            });
            slowest = slowest.max(took);
            assert_eq!(
                reload_gauge(&gw.metrics().await),
                Some(1.0),
                "write {i} ({how:?})"
            );
        } else {
            let seen = within(Duration::from_secs(1), || {
                let gw = &gw;
                async move {
                    let ex = gw.metrics().await;
                    reload_gauge(&ex) == Some(0.0)
                        && ex.value("mcpgate_config_reloads_total", &[("result", "error")])
                            > errors_before
                }
            })
            .await;
            assert!(
                seen.is_ok(),
                "write {i} ({how:?}): invalid file not reported (mcpgate_config_last_reload_successful 0, reloads_total{{result=error}} +1) within 1 s"
            );
            assert_eq!(
                served_generation(gw.addr()).await,
                Some(gen),
                "write {i} ({how:?}): an invalid file changed what is served"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        tokio::time::timeout(IO_TIMEOUT, l).await.unwrap().unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let ok = ok.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during reloads, e.g. {:?}",
        failures.len(),
        failures.len() + ok,
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 100, "the load loop barely ran: {ok} requests");
    let ex = gw.metrics().await;
    assert!(ex.value("mcpgate_config_reloads_total", &[("result", "success")]) >= 50.0);
    assert!(ex.value("mcpgate_config_reloads_total", &[("result", "error")]) >= 50.0);
    assert!(gw.logs().contains("configuration rejected"));
    assert_eq!(
        fx.idp.jwks_fetches(),
        jwks_fetches,
        "an issuer whose key source did not change must keep its keys across reloads"
    );
    eprintln!("reload under load: {ok} requests, slowest valid change served after {slowest:?}");
}

/// SIGHUP reloads a change the file watcher cannot see (the config is a symlink into a
/// directory that is not watched), and rejects an invalid one.
#[tokio::test]
async fn sighup_reloads_the_config() {
    let fx = Fixture::new();
    let gw = start(Layout::Linked, |p, a| fx.render(p, a, 1)).await;
    assert_eq!(served_generation(gw.addr()).await, Some(1));
    // SIGHUP reloads even when the files did not change (the watcher alone would not):
    // that proves the signal works on its own.
    let successes = |ex: &Exposition| {
        ex.get("mcpgate_config_reloads_total", &[("result", "success")])
            .unwrap_or(0.0)
    };
    let before = successes(&gw.metrics().await);
    gw.signal("HUP");
    within(Duration::from_secs(1), || {
        let gw = &gw;
        async move { successes(&gw.metrics().await) >= before + 1.0 }
    })
    .await
    .expect("SIGHUP did not reload within 1 s");
    assert!(gw.logs().contains("SIGHUP"), "{}", gw.logs());
    gw.write_in_place(&fx.render(gw.port, gw.admin_port, 2));
    gw.signal("HUP");
    let addr = gw.addr();
    within(Duration::from_secs(1), || async move {
        served_generation(addr).await == Some(2)
    })
    .await
    .expect("the new config was not applied within 1 s");

    // An invalid file on SIGHUP: rejected, old config kept, gauge 0; then fixed: gauge 1.
    gw.write_in_place("routes: [\n");
    gw.signal("HUP");
    within(Duration::from_secs(1), || {
        let gw = &gw;
        async move { reload_gauge(&gw.metrics().await) == Some(0.0) }
    })
    .await
    .expect("invalid config on SIGHUP not reported");
    assert_eq!(served_generation(gw.addr()).await, Some(2));
    gw.write_in_place(&fx.render(gw.port, gw.admin_port, 3));
    gw.signal("HUP");
    within(Duration::from_secs(1), || {
        let gw = &gw;
        async move {
            served_generation(gw.addr()).await == Some(3)
                && reload_gauge(&gw.metrics().await) == Some(1.0)
        }
    })
    .await
    .expect("fixed config on SIGHUP not applied");
}

/// A new listen or admin address is reported in the log and not applied; the rest of the file
/// is.
#[tokio::test]
async fn listen_address_change_is_reported_not_applied() {
    let fx = Fixture::new();
    let gw = start(Layout::Plain, |p, a| fx.render(p, a, 1)).await;
    // Ports nobody holds: a gateway that (wrongly) bound them would be seen doing it.
    let (new_port, new_admin) = (free_port(), free_port());
    gw.write_rename(&fx.render(new_port, new_admin, 2));
    let addr = gw.addr();
    within(Duration::from_secs(1), || async move {
        served_generation(addr).await == Some(2)
    })
    .await
    .expect("the rest of the config was not applied");
    let logs = gw.logs();
    assert!(
        logs.contains("listen.address changed") && logs.contains("takes effect on restart"),
        "{logs}"
    );
    assert!(logs.contains("admin.address changed"), "{logs}");
    for p in [new_port, new_admin] {
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", p))
                .await
                .is_err(),
            "a new address must not be bound before a restart"
        );
    }
    assert_eq!(gw.admin("/healthz").await.status, 200);
    let t = fx.tok("mcp:read");
    assert_eq!(
        send(gw.addr(), &Req::post("/mcp").bearer(&t)).await.status,
        200
    );
    assert_eq!(reload_gauge(&gw.metrics().await), Some(1.0));
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn peer(r: &reqwest::Response) -> Option<Vec<u8>> {
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
}

/// HTTPS with a test CA over h2 and http/1.1, then the certificate and key replaced on disk:
/// new handshakes get the new certificate, without a restart.
#[tokio::test]
async fn tls_h2_and_http1_and_certificate_rotation() {
    let fx = Fixture::new();
    let pki = Pki::new();
    let (cert1, key1, der1) = pki.leaf("first");
    let opts = Launch {
        prepare: Some(Box::new(move |dir: &Path| {
            std::fs::create_dir_all(dir.join("tls")).unwrap();
            std::fs::write(dir.join("tls/cert.pem"), &cert1).unwrap();
            std::fs::write(dir.join("tls/key.pem"), &key1).unwrap();
        })),
        ..Launch::default()
    };
    // Paths relative to the config file.
    let gw = Gateway::launch(opts, |p, a| {
        fx.render(p, a, 1).replace(
            "  threads: 2\n",
            "  threads: 2\n  tls:\n    cert: tls/cert.pem\n    key: tls/key.pem\n",
        )
    })
    .await;
    let t = fx.tok("mcp:read");
    let url = format!("https://mcp.example.com:{}/mcp", gw.port);
    for (h1, version) in [
        (false, reqwest::Version::HTTP_2),
        (true, reqwest::Version::HTTP_11),
    ] {
        let before = fx.up.count();
        let r = https_client(&pki, gw.addr(), h1)
            .post(&url)
            .bearer_auth(&t)
            .header("content-type", "application/json")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), version, "ALPN");
        assert_eq!(peer(&r).as_deref(), Some(der1.as_slice()));
        assert_eq!(r.status(), 200);
        assert_eq!(fx.up.count(), before + 1);
        assert_eq!(
            fx.up.last().header("x-forwarded-proto"),
            Some("https"),
            "{:?}",
            fx.up.last()
        );
        // Body inspection over h2 and http/1.1: a denied tool is refused before the upstream,
        // an allowed 60 KiB call arrives intact, 64 KiB + 1 gets 413.
        let r = https_client(&pki, gw.addr(), h1)
            .post(&url)
            .bearer_auth(&t)
            .body(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"admin_x"}}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let big = padded_call(60 * 1024);
        let r = https_client(&pki, gw.addr(), h1)
            .post(&url)
            .bearer_auth(&t)
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{version:?}");
        assert_eq!(fx.up.count(), before + 2);
        assert_eq!(fx.up.last().body, big, "{version:?}: body forwarded intact");
        // The gateway answers from the head and closes without reading the body, so a client
        // still writing it may see the connection reset instead of the 413.
        match https_client(&pki, gw.addr(), h1)
            .post(&url)
            .bearer_auth(&t)
            .body(padded_call(64 * 1024 + 1))
            .send()
            .await
        {
            Ok(r) => assert_eq!(r.status(), 413, "{version:?}"),
            Err(e) => assert!(e.is_request(), "{version:?}: {e:?}"),
        }
        assert_eq!(
            fx.up.count(),
            before + 2,
            "{version:?}: 64 KiB + 1 forwarded"
        );
        let before = before + 1;
        // Refusals over TLS carry the same challenge, and nothing is forwarded.
        let r = https_client(&pki, gw.addr(), h1)
            .post(&url)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.headers().contains_key("www-authenticate"));
        assert_eq!(fx.up.count(), before + 1);
    }

    // Rotate: key and certificate replaced (each atomically), no restart.
    let (cert2, key2, der2) = pki.leaf("second");
    write_atomically(&gw.dir.join("tls/key.pem"), &key2);
    write_atomically(&gw.dir.join("tls/cert.pem"), &cert2);
    let (pki, addr) = (&pki, gw.addr());
    let took = within(Duration::from_secs(2), || {
        let (url, der2) = (url.clone(), der2.clone());
        async move {
            match https_client(pki, addr, false).get(&url).send().await {
                Ok(r) => peer(&r).as_deref() == Some(der2.as_slice()),
                Err(_) => false,
            }
        }
    })
    .await
    .expect("the new certificate is not served");
    assert!(
        took < Duration::from_secs(1),
        "new certificate served after {took:?}"
    );
    for h1 in [false, true] {
        let r = https_client(pki, addr, h1)
            .post(&url)
            .bearer_auth(&t)
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(peer(&r).as_deref(), Some(der2.as_slice()));
    }
    assert_eq!(reload_gauge(&gw.metrics().await), Some(1.0));

    // A certificate that does not match the key is refused; the serving one stays.
    let (cert3, _key3, _) = pki.leaf("third");
    write_atomically(&gw.dir.join("tls/cert.pem"), &cert3);
    within(Duration::from_secs(1), || {
        let gw = &gw;
        async move { reload_gauge(&gw.metrics().await) == Some(0.0) }
    })
    .await
    .expect("a certificate not matching its key was not rejected");
    let r = https_client(pki, addr, false)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(peer(&r).as_deref(), Some(der2.as_slice()));
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

fn requests(ex: &Exposition) -> [f64; 6] {
    let v = |route: &str, decision: &str, reason: &str| {
        ex.value(
            "mcpgate_requests_total",
            &[("route", route), ("decision", decision), ("reason", reason)],
        )
    };
    [
        v("mcp", "allow", "ok"),
        v("mcp", "deny", "no_credentials"),
        v("mcp", "deny", "invalid_token"),
        v("mcp", "deny", "insufficient_scope"),
        v("mcp", "deny", "tool_scope"),
        v("", "deny", "no_route"),
    ]
}

/// `/metrics` parses with a strict exposition-format parser, every mcpgate family has help and
/// type, and the counters move as requests are allowed and refused.
#[tokio::test]
async fn metrics_parse_and_counters_move() {
    let fx = Fixture::new();
    let gw = start(Layout::Plain, |p, a| fx.render(p, a, 1)).await;
    let r = gw.admin("/metrics").await;
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{r}"
    );
    let ex = parse_exposition(&r.text()).unwrap_or_else(|e| panic!("{e}\n{}", r.text()));
    for (family, ty) in [
        ("mcpgate_requests_total", "counter"),
        ("mcpgate_auth_decision_seconds", "histogram"),
        ("mcpgate_upstream_seconds", "histogram"),
        ("mcpgate_jwks_refreshes_total", "counter"),
        ("mcpgate_jwks_keys", "gauge"),
        ("mcpgate_jwks_age_seconds", "gauge"),
        ("mcpgate_config_last_reload_successful", "gauge"),
        (
            "mcpgate_config_last_reload_success_timestamp_seconds",
            "gauge",
        ),
        ("mcpgate_build_info", "gauge"),
    ] {
        assert_eq!(
            ex.types.get(family).map(String::as_str),
            Some(ty),
            "{family}: {}",
            r.text()
        );
    }
    for (family, ty) in &ex.types {
        if family.starts_with("mcpgate_") {
            assert!(
                ex.help.get(family).is_some_and(|h| !h.is_empty()),
                "{family} has no help text"
            );
            if ty == "counter" {
                assert!(
                    family.ends_with("_total"),
                    "counter {family} without _total"
                );
            }
        }
    }
    assert_eq!(reload_gauge(&ex), Some(1.0));
    assert!(
        ex.value(
            "mcpgate_jwks_refreshes_total",
            &[("issuer", "as"), ("result", "success")]
        ) >= 1.0
    );
    assert!(ex.value("mcpgate_jwks_keys", &[("issuer", "as")]) >= 1.0);
    assert_eq!(
        ex.value(
            "mcpgate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    let ts = ex.value("mcpgate_config_last_reload_success_timestamp_seconds", &[]);
    assert!((ts - now() as f64).abs() < 120.0, "timestamp {ts}");

    let before = requests(&ex);
    let decisions = ex.value("mcpgate_auth_decision_seconds_count", &[("route", "mcp")]);
    let upstream = ex.value("mcpgate_upstream_seconds_count", &[("route", "mcp")]);
    let hits = ex.value(
        "mcpgate_cache_requests_total",
        &[("cache", "token"), ("result", "hit")],
    );

    let good = fx.tok("mcp:read");
    let addr = gw.addr();
    for _ in 0..2 {
        let r = send(addr, &Req::post("/mcp").bearer(&good)).await;
        assert_eq!(r.status, 200, "{r}");
    }
    assert_eq!(send(addr, &Req::post("/mcp")).await.status, 401);
    let expired = mint(
        Tok::new(&fx.idp.issuer(), R)
            .c("exp", json!(now() - 3600))
            .c("iat", json!(now() - 7200)),
    );
    assert_eq!(
        send(addr, &Req::post("/mcp").bearer(&expired)).await.status,
        401
    );
    let other = fx.tok("other");
    assert_eq!(
        send(addr, &Req::post("/mcp").bearer(&other)).await.status,
        403
    );
    let tool = Req::post("/mcp").bearer(&good).body(
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"admin_reset"}}"#
            .to_vec(),
    );
    assert_eq!(send(addr, &tool).await.status, 403);
    assert_eq!(send(addr, &Req::get("/nowhere")).await.status, 404);

    // The upstream latency of a request is recorded once its response is done: wait for it.
    eventually(
        Duration::from_secs(5),
        "the upstream latencies recorded",
        || async {
            gw.metric("mcpgate_upstream_seconds_count", &[("route", "mcp")])
                .await
                >= upstream + 2.0
        },
    )
    .await;
    let ex = gw.metrics().await;
    let moved: Vec<f64> = requests(&ex)
        .iter()
        .zip(before)
        .map(|(a, b)| a - b)
        .collect();
    assert_eq!(
        moved,
        [2.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        "mcpgate_requests_total moves for: allow, no_credentials, invalid_token, insufficient_scope, tool_scope, no_route"
    );
    assert_eq!(
        ex.value("mcpgate_auth_decision_seconds_count", &[("route", "mcp")]) - decisions,
        6.0
    );
    assert_eq!(
        ex.value("mcpgate_upstream_seconds_count", &[("route", "mcp")]) - upstream,
        2.0
    );
    assert!(
        ex.value(
            "mcpgate_cache_requests_total",
            &[("cache", "token"), ("result", "hit")]
        ) > hits,
        "the second use of a token is a cache hit"
    );
    // Bounded labels: no subject, client id or token material in any label.
    for s in &ex.samples {
        for (_, v) in &s.labels {
            assert!(
                !v.contains("alice") && !v.contains("client-1") && !v.contains("eyJ"),
                "unbounded label value {v:?} on {}",
                s.name
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------------

/// SIGTERM while a response stream is in flight: the stream runs to its end, new connections
/// are no longer accepted, and the process exits 0 once the stream is done (well before the
/// 10 s grace period).
#[tokio::test]
async fn sigterm_drains_an_in_flight_stream_then_exits_0() {
    let fx = Fixture::new();
    let mut gw = start(Layout::Plain, |p, a| fx.render(p, a, 1)).await;
    let t = fx.tok("mcp:read");
    let mut s = Stream::open(gw.addr(), &Req::get("/plain/sse").bearer(&t))
        .await
        .unwrap();
    assert_eq!(s.status, 200);
    let first = s.next(Duration::from_secs(5)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"n\":0"));
    let term_at = Instant::now();
    gw.signal("TERM");
    // New requests stop being served (within the 600 ms the test always allowed).
    let addr = gw.addr();
    let t2 = t.clone();
    within(Duration::from_millis(600), || {
        let t = t2.clone();
        async move {
            match tokio::net::TcpStream::connect(addr).await {
                Err(_) => true,
                Ok(_) => send_to(addr, &Req::post("/plain").bearer(&t))
                    .await
                    .is_err(),
            }
        }
    })
    .await
    .expect("new requests are still served after SIGTERM");
    assert!(gw.alive(), "exited while a stream was in flight");
    let rest = s.collect(Duration::from_secs(8)).await.unwrap();
    let stream_done = Instant::now();
    let text: String = rest
        .iter()
        .map(|(_, d)| String::from_utf8_lossy(d).to_string())
        .collect();
    for i in 1..8 {
        assert!(
            text.contains(&format!("\"n\":{i}")),
            "event {i} lost: {text:?}"
        );
    }
    assert_eq!(s.clean_end, Some(true), "the stream was cut");
    let status = gw
        .wait_exit(Duration::from_secs(12))
        .await
        .expect("no exit after SIGTERM");
    let exited = Instant::now();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        exited.duration_since(stream_done) < Duration::from_secs(3),
        "exit came {:?} after the stream ended (it should not wait out the grace period)",
        exited.duration_since(stream_done)
    );
    assert!(exited.duration_since(term_at) > Duration::from_secs(1));
}

// ---------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn header_and_body_limits() {
    let fx = Fixture::new();
    let gw = start(Layout::Plain, |p, a| fx.render_with(p, a, 1, 2048, 1000)).await;
    let t = fx.tok("mcp:read");
    let addr = gw.addr();
    let (conns, reqs) = (fx.up.connections(), fx.up.count());
    let untouched = || {
        assert_eq!(fx.up.count(), reqs, "{:#?}", fx.up.requests().last());
        assert_eq!(
            fx.up.connections(),
            conns,
            "an upstream connection was opened"
        );
    };
    // Headers over max_header_bytes: 431, with or without a token, in a header or the target.
    let big = "a".repeat(3000);
    for req in [
        Req::post("/plain").bearer(&t).h("X-Big", &big),
        Req::post("/plain").h("X-Big", &big),
        Req::post(&format!("/plain?{big}")).bearer(&t),
    ] {
        let r = send(addr, &req).await;
        assert_eq!(r.status, 431, "{r}");
        assert_json_error(&r, None);
    }
    untouched();
    // Content-Length over max_body_bytes: 413 from the head alone, and with the body sent.
    let head = Req::new("POST", "/plain")
        .bearer(&t)
        .h("Content-Type", "application/json")
        .h("Content-Length", "1001");
    let r = send_raw(addr, &head.to_bytes(), false).await.unwrap();
    assert_eq!(r.status, 413, "{r}");
    assert_json_error(&r, None);
    let r = send(addr, &Req::post("/plain").bearer(&t).body(vec![b'x'; 5000])).await;
    assert_eq!(r.status, 413, "{r}");
    untouched();
    // At the limit: forwarded.
    let body = vec![b'y'; 1000];
    let r = send(addr, &Req::post("/plain").bearer(&t).body(body.clone())).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(fx.up.last().body, body);
}

/// A chunked body that grows past `limits.max_body_bytes` on a route without body inspection:
/// the client gets 413 and the upstream never receives a complete request.
#[tokio::test]
async fn chunked_body_over_the_limit_gets_413() {
    let fx = Fixture::new();
    let gw = start(Layout::Plain, |p, a| {
        fx.render_with(p, a, 1, 32 * 1024, 1000)
    })
    .await;
    let t = fx.tok("mcp:read");
    let reqs = fx.up.count();
    let req = Req::new("POST", "/plain")
        .bearer(&t)
        .h("Content-Type", "application/json");
    let part = vec![b'z'; 800];
    let r = send_chunked(gw.addr(), &req, &[&part, &part, &part])
        .await
        .unwrap();
    assert_eq!(r.status, 413, "{r}");
    // Once the upstream has no connection left open, nothing more can arrive on one.
    eventually(
        Duration::from_secs(5),
        "upstream connections closed",
        || async { fx.up.open_connections() == 0 },
    )
    .await;
    assert_eq!(
        fx.up.count(),
        reqs,
        "the upstream received a complete request: {:#?}",
        fx.up.requests().last()
    );
}

// ---------------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------------

/// Sends every kind of request carrying a token to a gateway started with `args` and
/// `RUST_LOG=level`, then checks that no token (nor its payload or signature segment) appears
/// in its output and that the audit lines carry the 12-hex-digit SHA-256 prefix of the token.
async fn check_logs_for_tokens(args: &[&str], level: &str) {
    let fx = Fixture::new();
    let opts = Launch {
        args: args.iter().map(|a| a.to_string()).collect(),
        envs: vec![("RUST_LOG".into(), level.into())],
        ..Launch::default()
    };
    let gw = Gateway::launch(opts, |p, a| fx.render(p, a, 1)).await;
    let addr = gw.addr();
    let good = fx.tok("mcp:read");
    let weak = fx.tok("other");
    let expired = mint(
        Tok::new(&fx.idp.issuer(), R)
            .c("exp", json!(now() - 3600))
            .c("iat", json!(now() - 7200)),
    );
    let forged = mint(Tok::new(&fx.idp.issuer(), R).signer(Signer::Evil));
    let mut tampered = good.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    remember(&tampered);
    let tool = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"admin_x"}}"#;
    let requests = [
        Req::post("/mcp").bearer(&good),
        Req::post("/plain").bearer(&good),
        Req::post("/mcp").bearer(&weak),
        Req::post("/mcp").bearer(&expired),
        Req::post("/mcp").bearer(&forged),
        Req::post("/mcp").bearer(&tampered),
        Req::post(&format!("/mcp?access_token={good}")),
        Req::post(&format!("/mcp?access_token={good}")).bearer(&good),
        Req::post("/mcp").bearer(&good).bearer(&weak),
        Req::post("/mcp").h("Authorization", &format!("Basic {good}")),
        Req::post("/mcp")
            .h("Authorization", &format!("DPoP {good}"))
            .h("DPoP", &good),
        Req::post("/mcp").bearer(&good).body(tool.to_vec()),
        Req::post("/mcp").bearer(&good).body(b"{not json".to_vec()),
    ];
    for req in &requests {
        send(addr, req).await;
    }
    // One audit line per decision: once all are in, so is everything these requests logged.
    gw.wait_log("mcpgate::audit", requests.len()).await;
    let logs = gw.logs();
    assert_no_tokens(&logs);
    // Levels above RUST_LOG's never appear (pingora's debug records included).
    let hidden: &[&str] = match level {
        "info" => &["DEBUG", "TRACE"],
        "debug" => &["TRACE"],
        _ => &[],
    };
    for l in logs.lines() {
        assert!(
            !hidden.iter().any(|h| l.contains(h)),
            "a line above RUST_LOG={level}: {l}"
        );
    }
    let prefix = token_hash_prefix(&good);
    let audit: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("mcpgate::audit"))
        .collect();
    assert!(
        audit.iter().any(|l| l.contains(&prefix)),
        "no audit line carries the token hash prefix {prefix} (RUST_LOG={level}):\n{}",
        audit.join("\n")
    );
    if !args.contains(&"json") {
        return;
    }
    // JSON: every line is an object; the allowed request's audit line has its fields.
    let mut found = false;
    for l in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {l}"));
        let f = &v["fields"];
        if v["target"] == "mcpgate::audit"
            && f["token"] == prefix.as_str()
            && f["decision"] == "allow"
            && f["route"] == "mcp"
        {
            assert_eq!(f["subject"], "alice", "{l}");
            assert_eq!(f["issuer"], "as", "{l}");
            assert_eq!(f["mcp_method"], "tools/list", "{l}");
            found = true;
        }
    }
    assert!(found, "no JSON audit line for the allowed request");
}

#[tokio::test]
async fn logs_never_contain_tokens_pretty_info() {
    check_logs_for_tokens(&[], "info").await;
}

#[tokio::test]
async fn logs_never_contain_tokens_json_debug() {
    check_logs_for_tokens(&["--log-format", "json"], "debug").await;
}

/// The issue: "Tokens, proofs, API keys and `Authorization` never appear in any log, at any
/// level".
#[tokio::test]
async fn logs_never_contain_tokens_json_trace() {
    check_logs_for_tokens(&["--log-format", "json"], "trace").await;
}
