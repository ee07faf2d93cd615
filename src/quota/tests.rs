#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;
use crate::mcp::body::parse;
use crate::principal::{AuthMethod, Principal};

fn principal(sub: &str) -> Principal {
    Principal {
        method: AuthMethod::Jwt,
        any_audience: false,
        iss: Arc::from("https://as"),
        issuer_name: Arc::from("a"),
        subject: Some(Box::from(sub)),
        client_id: Some(Arc::from("agent")),
        scopes: crate::scope::ScopeSet::parse(""),
        audiences: Arc::from(Vec::new()),
        exp: 0,
        nbf: None,
        skew: 0,
        cnf_jkt: None,
        jti: None,
        iat: None,
        azp: None,
    }
}

fn rates(yaml: &str) -> Vec<FileRate> {
    serde_yaml::from_str(yaml).unwrap()
}

fn quotas(yaml: &str) -> Quotas {
    compile(&rates(yaml), None, &[], false).unwrap()
}

fn route(top: &Quotas, own: Option<&str>) -> RouteQuotas {
    let f: Option<FileRouteLimits> = own.map(|y| serde_yaml::from_str(y).unwrap());
    compile_route("mcp", f.as_ref(), top).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// Send `n` requests of `p` with `body` (JSON-RPC, or none) and return how many passed.
fn passes(l: &Limiter, q: &RouteQuotas, p: &Principal, body: Option<&str>, n: usize) -> usize {
    let calls = body.map(|b| parse(b.as_bytes()).unwrap());
    let req = Request {
        who: Who {
            principal: Some(p),
            route: "mcp",
            address: None,
        },
        calls: calls.as_ref(),
    };
    let rt = runtime();
    (0..n)
        .filter(|_| rt.block_on(l.admit(q, &req)).is_ok())
        .count()
}

fn call(tool: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}"}}}}"#)
}

#[test]
fn rates_and_refusals_of_the_file() {
    assert_eq!(parse_rate("600/minute"), Ok((600, 60)));
    assert_eq!(parse_rate(" 30 / hour "), Ok((30, 3600)));
    assert_eq!(parse_rate("1/day"), Ok((1, 86_400)));
    for bad in [
        "600",
        "600/minutes",
        "0/second",
        "-1/second",
        "x/hour",
        "2000000/second",
    ] {
        assert!(parse_rate(bad).is_err(), "{bad}");
    }
    let q = quotas("[{name: per-user, key: [issuer, subject], rate: 600/minute, burst: 60}]");
    let l = &q.rate[0];
    assert_eq!((l.count, l.period, l.burst), (600, 60, 60));
    assert_eq!(
        l.cell,
        Cell {
            interval: 100_000,
            tolerance: 6_000_000
        }
    );
    assert_eq!(l.fail, FailMode::Open);
    assert_eq!(
        l.describe(),
        "per-user 600/minute burst 60 key [issuer, subject]"
    );
    let q = quotas("[{name: writes, key: [subject, tool], rate: 30/hour, tools: ['delete_*']}]");
    assert_eq!(q.rate[0].burst, 30, "the burst defaults to the count");
    for (yaml, why) in [
        ("[{name: a, key: [], rate: 1/second}]", "at least one part"),
        (
            "[{name: a, key: [subject, subject], rate: 1/second}]",
            "twice",
        ),
        (
            "[{name: a, key: [user], rate: 1/second}]",
            "unknown variant",
        ),
        ("[{name: 'a b', key: [subject], rate: 1/second}]", "letters"),
        (
            "[{name: streams_per_subject, key: [subject], rate: 1/second}]",
            "reserved",
        ),
        (
            "[{name: a, key: [subject], rate: 1/second, burst: 0}]",
            "burst",
        ),
        (
            "[{name: a, key: [subject], rate: 1/day, burst: 1000000}]",
            "10 years",
        ),
        (
            "[{name: a, key: [subject], rate: 1/second, tools: []}]",
            "at least one pattern",
        ),
        (
            "[{name: a, key: [subject], rate: 1/second, fail: closed}]",
            "state.redis",
        ),
        (
            "[{name: a, key: [subject], rate: 1/second, limit: 3}]",
            "unknown field",
        ),
        (
            "[{name: a, key: [subject], rate: 1/second}, {name: a, key: [route], rate: 2/second}]",
            "defined twice",
        ),
    ] {
        let e = serde_yaml::from_str::<Vec<FileRate>>(yaml)
            .map_err(|e| e.to_string())
            .and_then(|r| compile(&r, None, &[], false).map_err(|e| e.reason));
        let e = e.err().unwrap_or_else(|| panic!("{yaml} accepted"));
        assert!(e.contains(why), "{yaml}: {e}");
    }
    assert!(compile(
        &[],
        Some(&FileConcurrency {
            streams_per_subject: 0
        }),
        &[],
        false
    )
    .is_err());
    let e = compile(&[], None, &["nope".into()], false).unwrap_err();
    assert_eq!(e.at, "limits.trusted_proxies");
}

/// A route's limit of the same name replaces the top-level one there; others add.
#[test]
fn routes_override_and_add() {
    let top = quotas(
        "[{name: per-user, key: [subject], rate: 10/minute}, {name: per-client, key: [client_id], rate: 100/minute}]",
    );
    let r = route(
        &top,
        Some("{rate: [{name: per-user, key: [subject], rate: 1/minute}, {name: extra, key: [route], rate: 5/second}], concurrency: {streams_per_subject: 2}}"),
    );
    let names: Vec<&str> = r.rate.iter().map(|l| &*l.name).collect();
    assert_eq!(names, ["per-user", "per-client", "extra"]);
    assert_eq!(r.rate[0].count, 1);
    assert!(Arc::ptr_eq(&r.rate[1], &top.rate[1]));
    assert_eq!(r.streams.as_ref().unwrap().max, 2);
    assert_ne!(
        r.rate[0].fingerprint, top.rate[0].fingerprint,
        "a route's limit has its own buckets"
    );
    let plain = route(&top, None);
    assert_eq!(plain.rate.len(), 2);
    assert!(!plain.needs_operation());
    let tools = route(
        &top,
        Some("{rate: [{name: w, key: [subject], rate: 1/minute, tools: ['delete_*']}]}"),
    );
    assert!(tools.needs_operation());
}

/// The fingerprint covers the definition but not the fail policy, and is the same in every
/// process (it names Redis keys).
#[test]
fn fingerprints_follow_the_definition() {
    let fp = |y: &str| quotas(y).rate[0].fingerprint;
    let base = fp("[{name: a, key: [subject], rate: 10/minute}]");
    assert_eq!(
        base,
        fp("[{name: a, key: [subject], rate: 10/minute, burst: 10}]")
    );
    for other in [
        "[{name: b, key: [subject], rate: 10/minute}]",
        "[{name: a, key: [issuer, subject], rate: 10/minute}]",
        "[{name: a, key: [subject], rate: 11/minute}]",
        "[{name: a, key: [subject], rate: 10/minute, burst: 3}]",
        "[{name: a, key: [subject], rate: 10/minute, tools: [x]}]",
    ] {
        assert_ne!(base, fp(other), "{other}");
    }
    let shared = compile(
        &rates("[{name: a, key: [subject], rate: 10/minute, fail: closed}]"),
        None,
        &[],
        true,
    )
    .unwrap();
    assert_eq!(shared.rate[0].fingerprint, base);
}

/// Keys isolate identities; burst then nothing; a refusal says which limit and when.
#[test]
fn buckets_are_per_key() {
    let q = route(
        &quotas("[{name: per-user, key: [issuer, subject], rate: 60/minute, burst: 3}]"),
        None,
    );
    let l = Limiter::new(None);
    let (alice, bob) = (principal("alice"), principal("bob"));
    assert_eq!(passes(&l, &q, &alice, None, 5), 3);
    assert_eq!(passes(&l, &q, &bob, None, 5), 3, "bob has his own bucket");
    let req = Request {
        who: Who {
            principal: Some(&alice),
            route: "mcp",
            address: None,
        },
        calls: None,
    };
    let e = runtime().block_on(l.admit(&q, &req)).unwrap_err();
    let t = e.throttle().unwrap();
    assert_eq!(e.reason(), crate::error::Reason::RateLimited);
    assert_eq!(&*t.limit, "per-user");
    assert_eq!(t.retry_after, 1, "one unit a second");
    assert_eq!(&*t.policy, "\"per-user\";q=60;w=60;mcpgate-burst=3");
    assert_eq!(&*t.state, "\"per-user\";r=0;t=1");
    assert_eq!(t.jsonrpc_id, None);
}

/// A tool-scoped limit counts only its tools (a batch counts each call, a method spelled
/// differently counts by the name it carries) and keys each tool apart.
#[test]
fn tool_limits_count_their_tools() {
    let q = route(
        &quotas(
            "[{name: writes, key: [subject, tool], rate: 2/hour, tools: ['delete_*', 'write_*']}]",
        ),
        None,
    );
    let l = Limiter::new(None);
    let p = principal("alice");
    assert_eq!(
        passes(&l, &q, &p, Some(&call("read_file")), 10),
        10,
        "not counted"
    );
    assert_eq!(
        passes(&l, &q, &p, None, 10),
        10,
        "no operation, not counted"
    );
    assert_eq!(passes(&l, &q, &p, Some(&call("delete_a")), 3), 2);
    assert_eq!(
        passes(&l, &q, &p, Some(&call("delete_b")), 3),
        2,
        "per tool"
    );
    // The vendor spelling of the method names the same tool: the same, spent, bucket.
    let folded = r#"{"jsonrpc":"2.0","id":1,"method":"Tools/Call","params":{"name":"delete_a"}}"#;
    assert_eq!(passes(&l, &q, &p, Some(folded), 1), 0);
    // A batch of two calls needs two units.
    let batch = format!("[{},{}]", call("write_x"), call("write_x"));
    assert_eq!(passes(&l, &q, &p, Some(&batch), 2), 1);
    // A single JSON-RPC request's refusal carries its id.
    let calls = parse(call("write_x").as_bytes()).unwrap();
    let req = Request {
        who: Who {
            principal: Some(&p),
            route: "mcp",
            address: None,
        },
        calls: Some(&calls),
    };
    let e = runtime().block_on(l.admit(&q, &req)).unwrap_err();
    assert_eq!(e.throttle().unwrap().jsonrpc_id.as_deref(), Some("1"));
}

/// A request refused by one limit takes nothing from the others.
#[test]
fn all_or_nothing() {
    let q = route(
        &quotas(
            "[{name: wide, key: [subject], rate: 10/hour}, {name: narrow, key: [subject], rate: 2/hour, tools: [x]}]",
        ),
        None,
    );
    let l = Limiter::new(None);
    let p = principal("alice");
    assert_eq!(passes(&l, &q, &p, Some(&call("x")), 5), 2);
    // The three refused calls of x took nothing from `wide`: 8 left.
    assert_eq!(passes(&l, &q, &p, None, 10), 8);
    let req = Request {
        who: Who {
            principal: Some(&p),
            route: "mcp",
            address: None,
        },
        calls: None,
    };
    let t = runtime().block_on(l.admit(&q, &req)).unwrap_err();
    let t = t.throttle().unwrap().clone();
    assert_eq!(&*t.limit, "wide");
    assert_eq!(t.retry_after, 360, "one unit every 6 minutes");
}

/// Anonymous requests share the "absent" value of principal parts (they do not escape), and
/// a client address keys them apart.
#[test]
fn anonymous_requests_share_or_key_by_address() {
    let top = quotas(
        "[{name: anon, key: [subject], rate: 1/hour}, {name: by-address, key: [client_address], rate: 2/hour}]",
    );
    let q = route(&top, None);
    let l = Limiter::new(None);
    let rt = runtime();
    let admit = |addr: &str| {
        let req = Request {
            who: Who {
                principal: None,
                route: "open",
                address: Some(addr.parse().unwrap()),
            },
            calls: None,
        };
        rt.block_on(l.admit(&q, &req))
            .map(|_| ())
            .map_err(|e| e.throttle().unwrap().limit.to_string())
    };
    assert_eq!(admit("192.0.2.1"), Ok(()));
    assert_eq!(
        admit("192.0.2.2"),
        Err("anon".into()),
        "one bucket for every anonymous caller"
    );
    // (A fresh limiter: the same definition would share the buckets used above.)
    let q = route(
        &quotas("[{name: by-address, key: [client_address], rate: 2/hour}]"),
        None,
    );
    let l = Limiter::new(None);
    let admit = |addr: &str| {
        let req = Request {
            who: Who {
                principal: None,
                route: "open",
                address: Some(addr.parse().unwrap()),
            },
            calls: None,
        };
        rt.block_on(l.admit(&q, &req)).is_ok()
    };
    assert!(admit("192.0.2.1") && admit("192.0.2.1") && !admit("192.0.2.1"));
    assert!(admit("192.0.2.2"));
}

/// The stream cap per identity, given back when the slot is dropped.
#[test]
fn stream_slots() {
    let top = compile(
        &[],
        Some(&FileConcurrency {
            streams_per_subject: 2,
        }),
        &[],
        false,
    )
    .unwrap();
    let q = route(&top, None);
    let l = Limiter::new(None);
    let (alice, bob) = (principal("alice"), principal("bob"));
    let rt = runtime();
    let admit = |p: &Principal| {
        let req = Request {
            who: Who {
                principal: Some(p),
                route: "mcp",
                address: None,
            },
            calls: None,
        };
        rt.block_on(l.admit(&q, &req))
    };
    let a1 = admit(&alice).unwrap();
    let _a2 = admit(&alice).unwrap();
    let e = admit(&alice).unwrap_err();
    assert_eq!(e.reason(), crate::error::Reason::StreamLimit);
    let t = e.throttle().unwrap();
    assert_eq!(
        &*t.policy,
        "\"streams_per_subject\";q=2;qu=\"concurrent-requests\""
    );
    assert_eq!(&*t.state, "\"streams_per_subject\";r=0");
    assert!(admit(&bob).is_ok(), "bob's are his own");
    drop(a1);
    let a3 = admit(&alice).unwrap();
    assert!(a3.is_some(), "a slot came back");
    assert_eq!(
        l.streams_open(),
        2,
        "bob's was dropped at once; alice holds two"
    );
}
