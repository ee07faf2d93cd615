"""The `streams` scale scenario of issue 15: idle SSE streams held through the gateway.

Called by bench/harness.py (`run_streams`, then `render` for the report). For each count N
of idle streams:

- memory: a fresh process per contender, pinned like the other proxies: the pingora
  pass-through (the floor: pingora alone relaying the same streams), mcpgate on an
  `auth: none` route (no token, so no stream watchdog), mcpgate on a JWT route (the
  scenario: cached RS256 token, a watchdog per stream), and the same with
  `MIMALLOC_ALLOW_THP=0` (mimalloc backs its arenas with transparent huge pages, so RSS
  counts allocated buffer space that was never touched). After a warm-up, RSS before and
  after opening N streams (`tools/src/bin/streams.rs clients`, 200 opening at a time,
  each `200` with its first event) and a settle; RSS per stream = delta / N; descriptors
  per stream the same way; the part of the delta in huge pages (`/proc/PID/smaps`);
- idle CPU of mcpgate over `idle_seconds` with the N streams open, and with none open
  (its timers and the audit flush run either way);
- throughput of other clients: wrk with the harness's settings and the same cached token
  on `/mcp` of that same mcpgate, with the N streams open and with none open, in
  interleaved rounds (open, none, open, none ...: the streams are closed and opened again
  between rounds), and the ratio of the medians. wrk's errors are counted;
- after each close, how long the proxy still holds sockets of the streams.

The upstream of the streams (`streams upstream`) answers every request with a `200`
`text/event-stream`, one comment, and then nothing. Every process started here is started
through, or registered in, the harness's `Procs` (WORK/pids), and stopped at the end.

Descriptors: mcpgate holds 3 per idle stream (the client's socket, the upstream socket,
and the duplicate of the upstream socket its watchdog keeps to end the stream at the
token's expiry: `src/streams.rs`), and counts 3 *places* per stream against
`limits.max_connections` (one per connection, `PLACES_PER_REQUEST` = 2 per request:
`src/connections.rs`). A count whose descriptors do not fit the hard open-file limit is
replaced by the largest multiple of 1,000 that does, and the report says why.
"""

import http.client
import os
import re
import resource
import select
import socket
import statistics
import subprocess
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
BIN = os.path.join(ROOT, "target", "release")

HOST = "127.0.0.1"
PORT = {"mcpgate": 18120, "passthrough": 18121, "upstream": 18122}
ADMIN = 18220
COUNTS = (10, 1_000, 10_000)
SMOKE_COUNTS = (10, 1_000)
CONCURRENCY = 200  # streams being opened at a time

# src/connections.rs and src/streams.rs (checked against the measured descriptors).
FDS_PER_STREAM = 3  # client socket, upstream socket, the watchdog's duplicate
PLACES_PER_STREAM = 3  # 1 for the connection + PLACES_PER_REQUEST (2) for the request
RESERVED_DESCRIPTORS = 64
HEADROOM = 256  # places kept free beyond the streams and wrk's connections

TARGET_BYTES_PER_STREAM = 16 * 1024
RSS_RESOLUTION = 4 << 20  # deltas below two huge pages give no figure per stream
TARGET_RATIO = 0.95
CLK_TCK = os.sysconf("SC_CLK_TCK")

CONTENDERS = (
    # (key, label, process, path, environment)
    # mcpgate keeps its memory in 4 KiB pages (src/server.rs, `no_transparent_huge_pages`):
    # mimalloc asks for transparent huge pages on its arenas (`madvise`), and RSS then counts
    # whole 2 MiB pages, untouched buffer space included. The pass-through (plain pingora
    # with mimalloc) is measured both ways; `MIMALLOC_ALLOW_THP=1` gives mcpgate them back.
    ("passthrough", "pass-through (pingora alone)", "passthrough", "/sse",
     {"MIMALLOC_ALLOW_THP": "0"}),
    ("passthrough-thp", "pass-through, huge pages (mimalloc's default)", "passthrough",
     "/sse", {}),
    ("none", "mcpgate, `auth: none` route", "mcpgate", "/open", {}),
    ("jwt", "mcpgate, JWT route (cached token)", "mcpgate", "/sse", {}),
    ("jwt-thp", "mcpgate, JWT route, `MIMALLOC_ALLOW_THP=1` (huge pages)", "mcpgate", "/sse",
     {"MIMALLOC_ALLOW_THP": "1"}),
)
# --------------------------------------------------------------------------------------
# Descriptor budget
# --------------------------------------------------------------------------------------


def budget(nofile):
    """mcpgate's default split of the open-file limit (`connections::Budget`): the idle
    upstream pool and the places left for clients."""
    pool = min(max(nofile // 16, 16), 1024)
    places = min(max(nofile - RESERVED_DESCRIPTORS - pool, 16), 1_000_000)
    return pool, places


def descriptors_needed(n, connections, nofile):
    pool, _ = budget(nofile)
    return FDS_PER_STREAM * n + PLACES_PER_STREAM * connections + RESERVED_DESCRIPTORS + pool


def plan(counts, nofile, connections):
    """Each requested count, or the largest that fits the open-file limit instead."""
    _, places = budget(nofile)
    fit = (places - PLACES_PER_STREAM * connections - HEADROOM) // PLACES_PER_STREAM
    if fit >= 1000:
        fit -= fit % 1000
    out, seen = [], set()
    for n in counts:
        m, why = n, None
        if n > fit:
            m = fit
            need = descriptors_needed(n, connections, nofile)
            why = (f"{n:,} streams need {need:,} descriptors in mcpgate ({FDS_PER_STREAM} per "
                   f"stream: client socket, upstream socket, the watchdog's duplicate; plus "
                   f"wrk's connections, {RESERVED_DESCRIPTORS} reserved and the idle upstream "
                   f"pool) and this machine's hard open-file limit is {nofile:,}: measured "
                   f"{m:,} instead. It would need `ulimit -n` ≥ {need:,} (e.g. 32768)")
        if m in seen:
            continue
        seen.add(m)
        out.append({"requested": n, "n": m, "why": why})
    return out


# --------------------------------------------------------------------------------------
# Process state
# --------------------------------------------------------------------------------------


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "Threads"):
                parts = v.split()
                out[k] = int(parts[0]) * (1024 if k != "Threads" else 1)
    return out


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])  # utime + stime of all threads


def smaps(pid):
    """Resident bytes by kind of mapping, and how many of them are in transparent huge
    pages."""
    out = {"anon": 0, "heap": 0, "stack": 0, "file": 0, "huge": 0}
    kind = "anon"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if re.match(r"^[0-9a-f]+-[0-9a-f]+$", first):
                fields = line.split()
                name = fields[5] if len(fields) > 5 else ""
                kind = ("heap" if name == "[heap]" else "stack" if name == "[stack]"
                        else "anon" if name == "" or name.startswith("[anon") else
                        "anon" if name.startswith("[") else "file")
            elif first == "Rss:":
                out[kind] += int(line.split()[1]) * 1024
            elif first == "AnonHugePages:":
                out["huge"] += int(line.split()[1]) * 1024
    return out


def snapshot(pid):
    s = status(pid)
    return {"rss": s.get("VmRSS", 0), "anon": s.get("RssAnon", 0), "threads": s.get("Threads"),
            "fds": fds(pid), "smaps": smaps(pid), "ticks": ticks(pid)}


def gauges(admin):
    """mcpgate's open connections, requests and streams (its /metrics)."""
    c = http.client.HTTPConnection(HOST, admin, timeout=5)
    try:
        c.request("GET", "/metrics")
        body = c.getresponse().read().decode()
    finally:
        c.close()
    out = {}
    for name in ("mcpgate_streams_open", "mcpgate_requests_open", "mcpgate_connections_open"):
        m = re.search(rf"^{name}(?:\{{\}})? (\S+)$", body, re.M)
        out[name] = float(m.group(1)) if m else None
    refused = re.findall(r"^mcpgate_connections_refused_total\{[^}]*\} (\S+)$", body, re.M)
    out["refused"] = sum(float(x) for x in refused)
    return out


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"streams: nothing listens on {HOST}:{port} after {timeout} s")


def wait_http(port, path, timeout=30):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection(HOST, port, timeout=1)
            c.request("GET", path)
            last = c.getresponse().status
            c.close()
            if last == 200:
                return
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise SystemExit(f"streams: {HOST}:{port}{path} not ready: {last}")


def stream_sockets(port):
    """Sockets of the stream path the proxy still holds: its connections to the streams
    upstream, and the connections it accepted on `port` (established, or closed by the
    client and not yet by the proxy)."""
    r = subprocess.run(["ss", "-Htn", "state", "established", "state", "close-wait",
                        f"( dport = :{PORT['upstream']} or sport = :{port} )"],
                       capture_output=True, text=True)
    return len([x for x in r.stdout.splitlines() if x.strip()])


def wait_released(port, admin, timeout):
    """After the clients went away: seconds until the proxy holds no socket of the stream
    path (and, for mcpgate, counts no stream open), or None. (Descriptors are not the
    criterion: the idle upstream pool wrk filled keeps its own for a minute.)"""
    t0 = time.time()
    while time.time() - t0 < timeout:
        ok = stream_sockets(port) == 0
        if ok and admin is not None:
            ok = not gauges(admin)["mcpgate_streams_open"]
        if ok:
            return round(time.time() - t0, 2)
        time.sleep(0.1)
    return None


# --------------------------------------------------------------------------------------
# The clients process
# --------------------------------------------------------------------------------------


class Clients:
    """`streams clients`: N idle streams held open until `close()`. Registered in the
    harness's Procs (stopped with everything else if the run ends early)."""

    def __init__(self, procs, work, port, path, token, n, pin_cpu):
        self.procs, self.name = procs, "streams-clients"
        argv = [os.path.join(BIN, "streams"), "clients", "--target", f"{HOST}:{port}",
                "--path", path, "--bearer", token, "--count", str(n),
                "--concurrency", str(CONCURRENCY)]
        if procs.pin and pin_cpu is not None:
            argv = ["taskset", "-c", pin_cpu] + argv
        self.log = open(os.path.join(work, "streams-clients.log"), "ab")
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.log, bufsize=0)
        procs.procs[self.name] = self.p
        with open(procs.pidfile, "a") as f:
            f.write(f"{self.p.pid}\n")
        self.buf = b""
        t0 = time.time()
        line = self._line(time.time() + 30 + n / 100)
        self.open_seconds = round(time.time() - t0, 2)
        if not line.startswith("ready "):
            self.close()
            raise SystemExit(f"streams clients ({n} on {path}): {line or 'no answer'}")

    def _line(self, deadline):
        fd = self.p.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.time()
            if left <= 0:
                return ""
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode(errors="replace").strip()

    def close(self):
        """Close the streams (the process exits); its final counts."""
        done = {}
        if self.p.poll() is None:
            try:
                self.p.stdin.close()
            except OSError:
                pass
            line = self._line(time.time() + 30)
            done = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.procs.procs.pop(self.name, None)
        self.log.close()
        return done


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


def mcpgate_config(work, n, connections, nofile, iss, aud, jwks_upstream):
    """One listener, threads: 1 (as the harness's mcpgate); `/mcp` (the JWT route of the
    harness, for wrk), `/sse` (the same JWT settings, to the streams upstream) and `/open`
    (`auth: none`, to the streams upstream). Every client is 127.0.0.1: the per-address cap
    is raised to hold the streams and wrk's connections; max_connections stays derived
    from the open-file limit (so the idle upstream pool keeps its default). Idle streams
    are requests being served, to which neither the idle nor the head deadline applies;
    the body and send timeouts are raised anyway so that nothing but a client or the
    upstream ends a stream during the measurement (the token lives 2 hours)."""
    _, places = budget(nofile)
    per_address = max(256, PLACES_PER_STREAM * (n + connections) + HEADROOM)
    if per_address > places:
        raise SystemExit(f"streams: {n} streams need {per_address} places, the open-file "
                         f"limit {nofile} gives {places}")
    up = f"http://{HOST}:{PORT['upstream']}"
    text = f"""# Generated by bench/streams.py: {n} idle streams.
listen:
  address: {HOST}:{PORT['mcpgate']}
  public_url: https://mcp.bench.example
  threads: 1
admin:
  address: {HOST}:{ADMIN}
limits:
  max_connections_per_address: {per_address}
  idle_timeout_seconds: 3600
  request_body_timeout_seconds: 3600
  send_timeout_seconds: 3600
issuers:
  - name: bench
    issuer: {iss}
    jwks_uri: {jwks_upstream}/jwks.json
    algorithms: [RS256, ES256]
    require_at_jwt: true
routes:
  - name: mcp
    path_prefix: /mcp
    upstream: {jwks_upstream}
    issuers: [bench]
    scopes: [mcp:tools]
  - name: sse
    path_prefix: /sse
    upstream: {up}
    issuers: [bench]
    audience_aliases: [{aud}]
    scopes: [mcp:tools]
  - name: open
    path_prefix: /open
    upstream: {up}
    auth: none
"""
    path = os.path.join(work, f"streams-{n}.yaml")
    with open(path, "w") as f:
        f.write(text)
    r = subprocess.run([os.path.join(BIN, "mcpgate"), "check", "--config", path],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"streams: mcpgate check {path}: {r.stdout}{r.stderr}")
    return path


# --------------------------------------------------------------------------------------
# The scenario
# --------------------------------------------------------------------------------------


def run_streams(args, procs, work, token, measure, *, jwks_upstream, iss, aud, log,
                counts=None, idle_seconds=None, proxy_cpu="0", load_cpu="1", floors=True):
    """Measure every count; returns the dict `render` prints (also saved in results.json).

    args: the harness's (rounds, duration, warmup, connections, smoke); procs: its Procs;
    token: a valid RS256 token of the bench issuer (cached after its first use); measure:
    the harness's `measure(args, procs, contender, seconds)` (wrk, CPU per request);
    jwks_upstream: the harness's upstream origin (JWKS and `/mcp`); floors: also measure
    the memory of the other CONTENDERS (pass-through, `auth: none` route, JWT route
    without transparent huge pages), which tell where the memory of a stream goes."""
    counts = counts or (SMOKE_COUNTS if args.smoke else COUNTS)
    idle_seconds = idle_seconds or (2 if args.smoke else 10)
    settle = 1 if args.smoke else 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Children inherit the limit: give the gateway all of it for this scenario.
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nofile = hard
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            thp = f.read().strip()
    except OSError:
        thp = "?"
    try:
        out = {"nofile": nofile, "thp": thp, "plan": plan(counts, nofile, args.connections),
               "idle_seconds": idle_seconds, "rounds": args.rounds,
               "duration": args.duration, "connections": args.connections, "rows": []}
        procs.start("streams-upstream", [os.path.join(BIN, "streams"), "upstream", "--listen",
                                         f"{HOST}:{PORT['upstream']}"], load_cpu)
        wait_port(PORT["upstream"])
        for step in out["plan"]:
            n = step["n"]
            cfg = mcpgate_config(work, n, args.connections, nofile, iss, aud, jwks_upstream)
            for key, label, kind, path, env in CONTENDERS:
                if key != "jwt" and not floors:
                    continue
                row = one(args, procs, work, token, measure, key, label, kind, path, env, n,
                          cfg, idle_seconds, settle, proxy_cpu, load_cpu, log)
                row["requested"] = step["requested"]
                out["rows"].append(row)
        return out
    finally:
        procs.stop("streams-upstream")
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def one(args, procs, work, token, measure, key, label, kind, path, env, n, cfg, idle_seconds,
        settle, proxy_cpu, load_cpu, log):
    name = f"streams-{key}-{n}"
    port = PORT[kind]
    admin = ADMIN if kind == "mcpgate" else None
    if kind == "mcpgate":
        procs.start(name, [os.path.join(BIN, "mcpgate"), "--log-format", "json", "run",
                           "--config", cfg], proxy_cpu, env=env,
                    log_to="/dev/null" if not args.smoke else None)
        wait_http(ADMIN, "/readyz")
    else:
        procs.start(name, [os.path.join(BIN, "passthrough"), f"{HOST}:{port}",
                           f"{HOST}:{PORT['upstream']}", "1"], proxy_cpu, env=env,
                    log_to="/dev/null" if not args.smoke else None)
        wait_port(port)
    pid = procs.pid(name)
    row = {"contender": key, "label": label, "n": n}
    try:
        wrk_c = {"label": f"{label}: other clients", "proc": name,
                 "url": f"http://{HOST}:{port}/mcp", "env": {"BENCH_BEARER": token}}
        if kind == "mcpgate":
            measure(args, procs, wrk_c, args.warmup)  # token cached, buffers and pool warm
        # The stream path warm: a few streams opened and closed.
        c = Clients(procs, work, port, path, token, min(n, 10), load_cpu)
        c.close()
        wait_released(port, admin, 30)
        time.sleep(settle)
        before = snapshot(pid)
        if key == "jwt":
            time.sleep(idle_seconds)
            base_idle = (ticks(pid) - before["ticks"]) / CLK_TCK / idle_seconds
        c = Clients(procs, work, port, path, token, n, load_cpu)
        row["open_seconds"] = c.open_seconds
        time.sleep(settle)
        after = snapshot(pid)
        if admin is not None:
            row["gauges"] = gauges(admin)
            if row["gauges"]["mcpgate_streams_open"] != n:
                log(f"  streams {n} {label}: mcpgate_streams_open is "
                    f"{row['gauges']['mcpgate_streams_open']}, not {n}")
        row.update(rss_before=before["rss"], rss_after=after["rss"],
                   anon_before=before["anon"], anon_after=after["anon"],
                   threads=after["threads"], fds_before=before["fds"], fds_after=after["fds"],
                   bytes_per_stream=(after["rss"] - before["rss"]) / n,
                   anon_per_stream=(after["anon"] - before["anon"]) / n,
                   fds_per_stream=(after["fds"] - before["fds"]) / n,
                   smaps_per_stream={k: (after["smaps"][k] - before["smaps"][k]) / n
                                     for k in after["smaps"]})
        if key == "jwt":
            t0 = ticks(pid)
            time.sleep(idle_seconds)
            row["idle_cpu"] = (ticks(pid) - t0) / CLK_TCK / idle_seconds
            row["idle_cpu_none"] = base_idle
            rounds = {"open": [], "none": []}
            reopen = []
            for r in range(args.rounds):
                procs.check_alive()
                if r > 0:
                    c = Clients(procs, work, port, path, token, n, load_cpu)
                    time.sleep(settle)
                    reopen.append(status(pid)["VmRSS"])
                res = measure(args, procs, dict(wrk_c, label=f"{label}, {n} streams open"),
                              args.duration)
                rounds["open"].append(res)
                done = c.close()
                row.setdefault("lost", 0)
                row["lost"] += done.get("lost", n)
                row.setdefault("extra_bytes", 0)
                row["extra_bytes"] += done.get("extra_bytes", 0)
                rel = wait_released(port, admin, 60)
                row.setdefault("release_seconds", []).append(rel)
                res = measure(args, procs, dict(wrk_c, label=f"{label}, no stream open"),
                              args.duration)
                rounds["none"].append(res)
                log(f"  streams {n} round {r + 1}/{args.rounds}: "
                    f"{rounds['open'][-1]['rps']:.0f} req/s with the streams open, "
                    f"{res['rps']:.0f} without; released in {rel} s")
            row["rss_reopened"] = reopen
            row["throughput"] = summarize(rounds)
        else:
            done = c.close()
            row["lost"] = done.get("lost", n)
            row["extra_bytes"] = done.get("extra_bytes", 0)
            row["release_seconds"] = [wait_released(port, admin, 60)]
        row["rss_closed"] = status(pid)["VmRSS"]
        log(f"  streams {n} {label}: {row['bytes_per_stream'] / 1024:.1f} KiB RSS and "
            f"{row['fds_per_stream']:.2f} fds per stream"
            + (f", idle CPU {row['idle_cpu']:.2%} (none open: {row['idle_cpu_none']:.2%}), "
               f"throughput ×{row['throughput']['ratio']:.3f}" if key == "jwt" else ""))
        return row
    finally:
        procs.stop(name)


def summarize(rounds):
    out = {}
    for k, rs in rounds.items():
        out[k] = {"rps": statistics.median(r["rps"] for r in rs),
                  "rounds_rps": [r["rps"] for r in rs],
                  "p99_us": statistics.median(r["p99_us"] for r in rs),
                  "cpu_us_per_req": statistics.median(r["cpu_us_per_req"] for r in rs),
                  "errors": sum(r["errors"] for r in rs)}
    out["ratio"] = out["open"]["rps"] / out["none"]["rps"] if out["none"]["rps"] else None
    return out


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def render(res):
    """Markdown tables and notes of `run_streams`'s result."""
    if not res:
        return ""
    L = []
    w = L.append
    w(f"**Open streams** (issue 15 scale scenario): N idle SSE streams through the proxy "
      f"(one process per contender and count, `threads: 1`, CPU 0; the clients and the "
      f"streams upstream on CPU 1, {CONCURRENCY} streams opening at a time; each stream "
      f"got its `200` and first event). RSS is VmRSS of the proxy before and "
      f"after opening the N streams (after a warm-up and a settle); \"in huge pages\" is "
      f"the part of the delta in transparent huge pages (`AnonHugePages` of "
      f"`/proc/PID/smaps`; the kernel's THP mode here: `{res.get('thp', '?')}`). "
      f"\"Released\" is how long after the clients closed the proxy still held sockets of "
      f"the streams (the longest over the rounds).")
    w("")
    w("| streams | contender | RSS before → with N open | per stream | of which in huge pages "
      "| target | fds per stream | lost | released after close |")
    w("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in res["rows"]:
        per = r["bytes_per_stream"]
        target = ""
        coarse = abs(r["rss_after"] - r["rss_before"]) < RSS_RESOLUTION
        if coarse:
            # A few streams move RSS by less than the allocator's and the kernel's
            # granularity (2 MiB huge pages): no figure per stream.
            target = "— (delta below resolution)"
        elif r["contender"].startswith("jwt"):
            target = ("met" if per <= TARGET_BYTES_PER_STREAM else "**missed**") + \
                f" (≤ {TARGET_BYTES_PER_STREAM // 1024} KiB)"
        sm = r["smaps_per_stream"]
        rel = r["release_seconds"]
        rel_s = ("**not released**" if any(x is None for x in rel)
                 else f"≤ {max(rel):.1f} s")
        lost = f"{r['lost']}" + (f", {r['extra_bytes']} B sent" if r.get("extra_bytes") else "")
        w(f"| {r['n']:,} | {r['label']} | {r['rss_before'] / 1048576:.1f} → "
          f"{r['rss_after'] / 1048576:.1f} MiB | "
          + (f"({per / 1024:.0f} KiB) | – | " if coarse else
             f"{per / 1024:.1f} KiB | {sm['huge'] / 1024:.1f} KiB | ")
          + f"{target} | "
          f"{r['fds_per_stream']:.2f} | {lost} | {rel_s} |")
    w("")
    by = {(r["n"], r["contender"]): r for r in res["rows"]
          if abs(r["rss_after"] - r["rss_before"]) >= RSS_RESOLUTION}
    for n in sorted({n for n, _ in by}):
        floor = by.get((n, "passthrough"))
        if not floor:
            continue
        above = [f"{label} {by[(n, k)]['bytes_per_stream'] - floor['bytes_per_stream']:+,.0f} B"
                 for k, label in (("none", "`auth: none`"), ("jwt", "JWT"))
                 if (n, k) in by]
        w(f"At {n:,} streams, mcpgate per stream above pingora alone "
          f"({floor['bytes_per_stream'] / 1024:.1f} KiB): " + ", ".join(above) + ".")
        w("")
    jwt = [r for r in res["rows"] if r["contender"] == "jwt"]
    if jwt:
        w(f"mcpgate (JWT route) with the streams open: idle CPU over {res['idle_seconds']} s "
          f"(utime + stime of the process, % of one core), and other clients' cached-JWT "
          f"throughput on `/mcp` of the same process (wrk -t1 -c{res['connections']}, "
          f"{res['rounds']} interleaved rounds × {res['duration']} s, medians):")
        w("")
        w("| streams | idle CPU, N open / none | req/s, N open / none | ratio | target | "
          "CPU/req, N open / none | p99, N open / none | wrk errors |")
        w("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in jwt:
            t = r["throughput"]
            o, z = t["open"], t["none"]
            ok = t["ratio"] is not None and t["ratio"] >= TARGET_RATIO
            errs = o["errors"] + z["errors"]
            w(f"| {r['n']:,} | {r['idle_cpu']:.2%} / {r['idle_cpu_none']:.2%} | "
              f"{o['rps']:,.0f} / {z['rps']:,.0f} | {t['ratio']:.3f}× | "
              f"{'met' if ok else '**missed**'} (≥ {TARGET_RATIO}×) | "
              f"{o['cpu_us_per_req']:.1f} / {z['cpu_us_per_req']:.1f} µs | "
              f"{o['p99_us'] / 1000:.2f} / {z['p99_us'] / 1000:.2f} ms | "
              f"{'**' + str(errs) + '**' if errs else 0} |")
        w("")
    for step in res["plan"]:
        if step["why"]:
            w(f"Not measured: {step['why']}.")
            w("")
    return "\n".join(L) + "\n"
