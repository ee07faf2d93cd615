"""Checks of the monitoring kit: helm/mcpgate/files/grafana-dashboard.json and
helm/mcpgate/files/prometheus-rules.yaml (used by check_chart.py).

Every function here is pure or only runs tools (promtool, the gateway binary); each returns
findings `(name, ok, detail)` so that check_chart.py records them and its self-tests can feed
deliberately broken inputs to the same checks.

Metric names are checked against what the gateway really exposes: the built binary is started
on free loopback ports, with a loopback JWKS server (so the key metrics exist) and a Redis URL
on a closed loopback port (so the shared-state metrics exist), and `/metrics` is scraped after
one config reload. Every family is exposed from the start; any that appeared only after rarer
events would be listed in AFTER_EVENTS, and must be in the README's metric list.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

Finding = tuple[str, bool, str]

# Metric families the gateway registers but exposes only after an event this scrape does not
# cause. Empty since every family is exposed (at zero) from the start (issue 18 item 7); the
# scrape's config has an introspecting issuer so that the introspection families exist.
AFTER_EVENTS: dict[str, str] = {}

# Prometheus's own series, valid in any expression.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

# What the dashboard must show (issue 18 item 9): each family must appear in some panel.
DASHBOARD_MUST_SHOW = [
    "mcpgate_requests_total",
    "mcpgate_auth_decision_seconds",
    "mcpgate_upstream_seconds",
    "mcpgate_jwks_age_seconds",
    "mcpgate_jwks_refreshes_total",
    "mcpgate_cache_requests_total",
    "mcpgate_introspection_requests_total",
    "mcpgate_introspection_seconds",
    "mcpgate_config_last_reload_successful",
    "mcpgate_config_reloads_total",
    "mcpgate_redis_circuit_open",
    "mcpgate_redis_calls_total",
    "mcpgate_state_fail_open_total",
    "mcpgate_revocations_applied_total",
    "mcpgate_connections_open",
    "mcpgate_connections_refused_total",
    "mcpgate_connection_timeouts_total",
    "mcpgate_streams_closed_token_expired_total",
    "mcpgate_streams_closed_token_revoked_total",
    "mcpgate_upstream_answers_refused_total",
    "mcpgate_responses_total",
    "mcpgate_upstream_errors_total",
    "mcpgate_upstream_ttfb_seconds",
    "mcpgate_upstream_stream_seconds",
    "mcpgate_requests_in_flight",
    "mcpgate_streams_open",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
]

# Alerts the rules must have (issue 18 item 9), by what they watch.
REQUIRED_ALERTS = {
    "McpgateJwksRefreshFailing": "mcpgate_jwks_refreshes_total",
    "McpgateJwksKeysStale": "mcpgate_jwks_age_seconds",
    "McpgateConfigReloadFailed": "mcpgate_config_last_reload_successful",
    "McpgateFailOpenDecisions": "mcpgate_state_fail_open_total",
    "McpgateDenyRatioHigh": "mcpgate_requests_total",
    "McpgateUpstreamFailures": "mcpgate_requests_total",
    "McpgateRedisCircuitOpen": "mcpgate_redis_circuit_open",
    "McpgateRevocationsDiverged": "mcpgate_revocations_diverged",
    "McpgateIntrospectionRateLimited": "mcpgate_introspection_requests_total",
}

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


# --------------------------------------------------------------------------------------
# PromQL: the metric names an expression reads
# --------------------------------------------------------------------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
             "and", "or", "unless", "atan2", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """Names of the series an expression selects (not functions, keywords, labels, durations).
    A small lexer, not a parser: strings, label matchers, ranges and grouping label lists are
    removed first; what is left that looks like an identifier and is not called is a metric."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s, flags=re.I)
    names: set[str] = set()
    for m in re.finditer(r"(?<![A-Za-z0-9_.:$])[A-Za-z_:][A-Za-z0-9_:]*", s):
        tok = m.group(0)
        if tok.lower() in _KEYWORDS:
            continue
        if s[m.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        names.add(tok)
    return names


def grafana_to_promql(expr: str) -> str:
    """A dashboard expression as Prometheus would receive it (Grafana variables filled in)."""
    out = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", ".*", out)


# --------------------------------------------------------------------------------------
# The gateway's metrics, scraped live
# --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _jwks_document(tmp: Path) -> bytes:
    """A JWKS with one fresh RSA public key (made with the openssl CLI)."""
    key = tmp / "jwks-key.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key)],
                   check=True, capture_output=True, timeout=60)
    r = subprocess.run(["openssl", "rsa", "-in", str(key), "-noout", "-modulus"], check=True, capture_output=True, text=True, timeout=30)
    modulus = bytes.fromhex(r.stdout.strip().split("=", 1)[1])
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    return json.dumps({"keys": [{"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256", "n": b64(modulus), "e": "AQAB"}]}).encode()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


def parse_exposition(text: str) -> tuple[set[str], set[str]]:
    """(sample names, family names) of a Prometheus text exposition."""
    samples: set[str] = set()
    families: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            families.add(line.split()[2])
        elif line and not line.startswith("#"):
            samples.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return samples, families


def scrape_gateway(binary: Path, timeout: float = 20.0) -> tuple[str | None, str]:
    """Start the gateway on loopback with a JWKS server and a (closed) Redis port, wait until
    it has keys, reload its config once, and return (exposition text, detail)."""
    with tempfile.TemporaryDirectory(prefix="mcpgate-scrape-") as tmp_s:
        tmp = Path(tmp_s)
        try:
            jwks = _jwks_document(tmp)
        except (OSError, subprocess.SubprocessError) as e:
            return None, f"cannot make a JWKS with openssl: {e}"

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = jwks if self.path == "/jwks" else b"{}"
                self.send_response(200 if self.path == "/jwks" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        idp = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=idp.serve_forever, daemon=True).start()
        idp_port = idp.server_address[1]
        pub, adm, redis_port = free_port(), free_port(), free_port()
        conf_dir = tmp / "conf"
        conf_dir.mkdir()
        config = {
            "listen": {"address": f"127.0.0.1:{pub}", "public_url": f"http://127.0.0.1:{pub}"},
            "admin": {"address": f"127.0.0.1:{adm}"},
            "state": {"redis": {"url": f"redis://127.0.0.1:{redis_port}/0"}},
            "issuers": [
                {"name": "corp", "issuer": f"http://127.0.0.1:{idp_port}/idp", "jwks_uri": f"http://127.0.0.1:{idp_port}/jwks"},
                {"name": "introspecting", "issuer": f"http://127.0.0.1:{idp_port}/idp2", "jwks_uri": f"http://127.0.0.1:{idp_port}/jwks",
                 "introspection": {"endpoint": f"http://127.0.0.1:{idp_port}/introspect", "client_id": "mcpgate", "client_secret": "not-a-secret"}},
            ],
            "routes": [{"name": "files", "path_prefix": "/files", "upstream": f"http://127.0.0.1:{free_port()}", "scopes": ["files:read"]}],
        }
        conf = conf_dir / "config.yaml"
        conf.write_text(yaml.safe_dump(config))
        log = tmp / "log"
        with open(log, "w") as logf:
            proc = subprocess.Popen([str(binary), "run", "--config", str(conf)], stdout=logf, stderr=subprocess.STDOUT,
                                    env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_LOG": "warn"},
                                    start_new_session=True)
        try:
            deadline = time.monotonic() + timeout

            def poll(pred: Any) -> str | None:
                while time.monotonic() < deadline and proc.poll() is None:
                    st, body = _get(f"http://127.0.0.1:{adm}/metrics")
                    if st == 200 and pred(body):
                        return body
                    time.sleep(0.2)
                return None

            if poll(lambda b: 'mcpgate_jwks_keys{issuer="corp"} 1' in b) is None:
                return None, f"no JWKS keys within {timeout} s; exit {proc.poll()}; log: {log.read_text()[-400:]}"
            # One reload (write a new file and rename it over the old one, as editors do).
            new = conf_dir / "config.yaml.new"
            new.write_text(yaml.safe_dump(config) + "# reloaded\n")
            new.rename(conf)
            text = poll(lambda b: "mcpgate_config_reloads_total{" in b)
            if text is None:
                return None, f"no config reload seen within {timeout} s; log: {log.read_text()[-400:]}"
            return text, ""
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            idp.shutdown()
            idp.server_close()


def readme_metric_names(readme_text: str) -> set[str]:
    return set(re.findall(r"`(mcpgate_[a-z0-9_]+)", readme_text))


def known_names(samples: set[str], families: set[str]) -> set[str]:
    """Every name an expression may select: live samples and families, plus the families
    exposed only after events (and their histogram series)."""
    names = set(samples) | set(families) | PROMETHEUS_SERIES
    for fam in AFTER_EVENTS:
        names.add(fam)
        names.update(fam + s for s in HISTOGRAM_SUFFIXES)
    return names


def after_events_findings(samples: set[str], families: set[str], readme_text: str) -> tuple[list[Finding], list[str]]:
    """Each AFTER_EVENTS family is documented in the README; notes for those now live."""
    out: list[Finding] = []
    notes: list[str] = []
    documented = readme_metric_names(readme_text)
    for fam, when in sorted(AFTER_EVENTS.items()):
        out.append((f"metric {fam} (exposed {when}) is in the README's metric list", fam in documented, ""))
        if fam in samples or fam in families:
            notes.append(f"{fam} is now exposed at start: it can leave AFTER_EVENTS in tests/packaging/check_monitoring.py")
    return out, notes


# --------------------------------------------------------------------------------------
# promtool
# --------------------------------------------------------------------------------------


def promtool() -> str | None:
    """promtool from PATH, else the copy promtool.sh takes out of Debian's package."""
    local = Path(__file__).resolve().parent / ".tools" / "promtool"
    return shutil.which("promtool") or (str(local) if os.access(local, os.X_OK) else None)


def run_promtool(args: list[str], cwd: Path | None = None) -> tuple[int, str]:
    tool = promtool()
    if tool is None:
        return 127, "promtool not found (tests/packaging/promtool.sh takes it out of Debian's prometheus package)"
    try:
        r = subprocess.run([tool, *args], capture_output=True, text=True, timeout=120, cwd=cwd)
    except subprocess.TimeoutExpired:
        return 124, "promtool timed out"
    return r.returncode, (r.stdout + r.stderr).strip()


def promtool_check_rules(rules: dict[str, Any], label: str) -> Finding:
    with tempfile.TemporaryDirectory(prefix="mcpgate-rules-") as tmp:
        path = Path(tmp) / "rules.yaml"
        path.write_text(yaml.safe_dump(rules, sort_keys=False))
        rc, out = run_promtool(["check", "rules", str(path)])
    return (f"promtool check rules: {label}", rc == 0, out[-600:])


def promtool_test_rules(rules: dict[str, Any], test_file: Path, label: str) -> Finding:
    """`promtool test rules` with `rules` written as rules.yaml next to a copy of the tests."""
    with tempfile.TemporaryDirectory(prefix="mcpgate-rules-") as tmp:
        (Path(tmp) / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
        shutil.copy(test_file, Path(tmp) / "tests.yaml")
        rc, out = run_promtool(["test", "rules", "tests.yaml"], cwd=Path(tmp))
    return (f"promtool test rules: {label}", rc == 0, out[-1500:])


# --------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------


def rule_entries(rules: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for g in rules.get("groups") or [] for r in g.get("rules") or []]


def rules_findings(rules: dict[str, Any], tests: dict[str, Any], names: set[str]) -> list[Finding]:
    """Shape, required alerts, test coverage (every alert fires and stays quiet in some test)
    and metric names of a rule file."""
    out: list[Finding] = []
    entries = rule_entries(rules)
    alerts = {r["alert"]: r for r in entries if "alert" in r}
    records = {r["record"] for r in entries if "record" in r}
    out.append(("rules: a plain rule file (only `groups:` at the top)", set(rules) == {"groups"}, f"{sorted(rules)}"))
    record_exprs = {r["record"]: str(r.get("expr", "")) for r in entries if "record" in r}

    def reads(expr: str, seen: frozenset[str] = frozenset()) -> set[str]:
        """Metric names an expression reads, through the recording rules it uses."""
        direct = promql_metric_names(expr)
        out = set(direct)
        for n in direct & (set(record_exprs) - seen):
            out |= reads(record_exprs[n], seen | {n})
        return out

    for name, metric in sorted(REQUIRED_ALERTS.items()):
        r = alerts.get(name)
        out.append((f"rules: alert {name} exists and reads {metric}", r is not None and metric in reads(str(r.get("expr", ""))), ""))
    for name, r in sorted(alerts.items()):
        sev = (r.get("labels") or {}).get("severity")
        ann = r.get("annotations") or {}
        out.append((f"rules: alert {name} has a severity (warning or critical)", sev in ("warning", "critical"), f"{sev!r}"))
        out.append((f"rules: alert {name} has a summary and a description", bool(ann.get("summary")) and bool(ann.get("description")), ""))
    fires: dict[str, int] = {}
    quiet: dict[str, int] = {}
    for t in tests.get("tests") or []:
        for a in t.get("alert_rule_test") or []:
            bucket = fires if a.get("exp_alerts") else quiet
            bucket[a["alertname"]] = bucket.get(a["alertname"], 0) + 1
    for name in sorted(alerts):
        out.append((f"rules: alert {name} is unit-tested firing", fires.get(name, 0) > 0, "no alert_rule_test expects it"))
        out.append((f"rules: alert {name} is unit-tested not firing", quiet.get(name, 0) > 0, "no alert_rule_test with exp_alerts: []"))
    unknown_tested = sorted((set(fires) | set(quiet)) - set(alerts))
    out.append(("rules: tests name only existing alerts", not unknown_tested, f"{unknown_tested}"))
    for r in entries:
        what = r.get("alert") or r.get("record")
        used = promql_metric_names(str(r.get("expr", "")))
        bad = sorted(n for n in used if n not in names and n not in records)
        out.append((f"rules: {what} reads only metrics the gateway exposes", not bad, f"unknown: {bad}"))
    return out


# --------------------------------------------------------------------------------------
# Dashboard
# --------------------------------------------------------------------------------------


def dashboard_panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in dash.get("panels") or []:
        out.append(p)
        out.extend(p.get("panels") or [])  # panels inside collapsed rows
    return out


def dashboard_exprs(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every query, and of every query variable."""
    out: list[tuple[str, str]] = []
    for p in dashboard_panels(dash):
        for t in p.get("targets") or []:
            if "expr" in t:
                out.append((str(p.get("title")), str(t["expr"])))
    for v in (dash.get("templating") or {}).get("list") or []:
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\)\s*", str(q))
            out.append((f"variable {v.get('name')}", m.group(1) if m else str(q)))
    return out


def dashboard_findings(dash: Any, names: set[str]) -> list[Finding]:
    out: list[Finding] = []
    if not isinstance(dash, dict):
        return [("dashboard: a JSON object", False, type(dash).__name__)]
    out.append(("dashboard: uid and title set", bool(dash.get("uid")) and bool(dash.get("title")), ""))
    out.append(("dashboard: no numeric top-level id (provisioned dashboards get theirs from Grafana)", dash.get("id") is None, f"{dash.get('id')!r}"))
    variables = (dash.get("templating") or {}).get("list") or []
    ds_vars = [v for v in variables if v.get("type") == "datasource" and v.get("query") == "prometheus"]
    out.append(("dashboard: a `datasource` variable of type datasource (prometheus)", any(v.get("name") == "datasource" for v in ds_vars), ""))
    panels = dashboard_panels(dash)
    ids = [p.get("id") for p in panels]
    out.append(("dashboard: panel ids are unique integers", len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids), f"{ids}"))
    # Data sources: only the variable, never a fixed uid.
    fixed: list[str] = []
    for where, obj in [(f"panel {p.get('title')}", p) for p in panels] + [(f"target of {p.get('title')}", t) for p in panels for t in p.get("targets") or []] + \
            [(f"variable {v.get('name')}", v) for v in variables if v.get("type") == "query"]:
        ds = obj.get("datasource")
        if obj.get("type") == "row" and ds is None:
            continue
        if not (isinstance(ds, dict) and ds.get("uid") == "${datasource}" and ds.get("type") == "prometheus"):
            fixed.append(f"{where}: {ds!r}")
    out.append(("dashboard: every panel, query and variable uses ${datasource}", not fixed, "; ".join(fixed[:5])))
    # Layout: inside the 24-column grid, no overlaps.
    boxes: list[tuple[str, int, int, int, int]] = []
    bad_pos: list[str] = []
    for p in panels:
        g = p.get("gridPos") or {}
        try:
            x, y, w, h = (int(g[k]) for k in ("x", "y", "w", "h"))
        except (KeyError, TypeError, ValueError):
            bad_pos.append(f"{p.get('title')}: {g}")
            continue
        if x < 0 or w < 1 or h < 1 or x + w > 24:
            bad_pos.append(f"{p.get('title')}: {g}")
        for t, bx, by, bw, bh in boxes:
            if x < bx + bw and bx < x + w and y < by + bh and by < y + h:
                bad_pos.append(f"{p.get('title')} overlaps {t}")
        boxes.append((str(p.get("title")), x, y, w, h))
    out.append(("dashboard: panels inside the grid, none overlapping", not bad_pos, "; ".join(bad_pos[:5])))
    data_panels = [p for p in panels if p.get("type") != "row"]
    empty = [str(p.get("title")) for p in data_panels if not any(t.get("expr") for t in p.get("targets") or [])]
    out.append(("dashboard: every panel has a query", not empty, f"{empty}"))
    exprs = dashboard_exprs(dash)
    used: set[str] = set()
    for title, expr in exprs:
        n = promql_metric_names(grafana_to_promql(expr))
        used |= n
        bad = sorted(x for x in n if x not in names)
        out.append((f"dashboard: {title}: reads only metrics the gateway exposes", not bad and bool(n), f"unknown: {bad}" if bad else "reads no metric"))
    families = used | {re.sub(r"_(bucket|sum|count)$", "", u) for u in used}
    for fam in DASHBOARD_MUST_SHOW:
        out.append((f"dashboard: shows {fam}", fam in families, ""))
    return out


def dashboard_parse_findings(dash: dict[str, Any]) -> Finding:
    """Every dashboard expression, variables filled in, parsed by promtool (as recording
    rules of a scratch rule file)."""
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": grafana_to_promql(e)} for i, (_, e) in enumerate(dashboard_exprs(dash))]}]}
    name, ok, detail = promtool_check_rules(rules, "dashboard expressions")
    return ("dashboard: every expression parses (promtool)", ok, detail)

