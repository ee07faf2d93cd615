"""Soak: mcpgate under a bounded mixed load, sampled every 10 s (bench/soak.sh runs it).

    python3 bench/soak.py [--seconds 600] [--bin target/release/mcpgate] [--out FILE]

Everything runs on 127.0.0.1 and stops by itself: a mock authorization server (JWKS that
rotates, RFC 7662 introspection), a recording MCP upstream (JSON answers, `tools/list`,
and SSE streams that run for a few seconds), the gateway, and client threads:

- cached JWTs (a pool of 50 reused tokens) and first-seen JWTs (a new `jti` each time),
- DPoP-bound tokens with a fresh proof per request,
- opaque tokens (introspection; a new one now and then),
- `tools/call` bodies on a policy route (allowed, and denied: `delete_*` needs `mcp:admin`),
- long SSE streams opened, read for a while and closed,
- a config reload every 10 s (a comment line changes), JWKS rotation every 60 s (a new key
  is added, tokens switch to it, the oldest is dropped), and a revocation every 10 s (a
  throw-away subject, whose token must then be refused).

Every answer is checked against what it should be (200, 403 for denied tools, 401 for a
revoked subject); anything else is a failed request. Every 10 s it prints and records RSS,
open file descriptors, threads, the p50/p99 latency of that interval and the failures.
Needs Python's `cryptography` (Debian: python3-cryptography).
"""

import argparse
import base64
import hashlib
import http.client
import http.server
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

HOST = "127.0.0.1"
PUBLIC = "https://mcp.soak.example"
AUD = PUBLIC + "/mcp"
ADMIN_TOKEN = "soak-admin-token-0123456789abcdef"
# Lifetime of first-seen JWTs, DPoP-bound tokens and opaque tokens: short, so that the
# caches keyed by them reach a steady state (entries expire with the token) within the run.
TOKEN_LIFE = 120
INTRO_ID, INTRO_SECRET = "soak", "soak-secret"


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64int(n, size):
    return b64(n.to_bytes(size, "big"))


class Key:
    def __init__(self, kid):
        self.kid = kid
        self.priv = ec.generate_private_key(ec.SECP256R1())
        nums = self.priv.public_key().public_numbers()
        self.jwk = {"kty": "EC", "crv": "P-256", "x": b64int(nums.x, 32),
                    "y": b64int(nums.y, 32)}

    def sign(self, header, claims):
        h = b64(json.dumps(header, separators=(",", ":")).encode())
        c = b64(json.dumps(claims, separators=(",", ":")).encode())
        der = self.priv.sign(f"{h}.{c}".encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{h}.{c}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def thumbprint(self):
        j = json.dumps({"crv": "P-256", "kty": "EC", "x": self.jwk["x"], "y": self.jwk["y"]},
                       separators=(",", ":"))
        return b64(hashlib.sha256(j.encode()).digest())


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Quiet(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, body, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class State:
    """What the mock servers serve and the clients use; changed by the rotation thread."""

    def __init__(self, iss):
        self.iss = iss
        self.lock = threading.Lock()
        self.keys = [Key("k0")]
        self.opaque = {}
        self.serial = 0

    def signing_key(self):
        with self.lock:
            return self.keys[-1]

    def jwks(self):
        with self.lock:
            return {"keys": [dict(k.jwk, kid=k.kid, alg="ES256", use="sig") for k in self.keys]}

    def rotate(self):
        with self.lock:
            self.serial += 1
            self.keys.append(Key(f"k{self.serial}"))
            if len(self.keys) > 2:
                self.keys.pop(0)


def idp_handler(state):
    class H(Quiet):
        def do_GET(self):
            if self.path == "/jwks":
                return self.reply(200, json.dumps(state.jwks()).encode())
            self.reply(404, b"{}")

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(n).decode())
            token = (form.get("token") or [""])[0]
            now = int(time.time())
            if token in state.opaque:
                ans = {"active": True, "iss": state.iss + "/opaque", "aud": AUD,
                       "sub": state.opaque[token], "client_id": "soak", "scope": "mcp:read",
                       "token_type": "Bearer", "iat": now - 5, "exp": now + TOKEN_LIFE}
            else:
                ans = {"active": False}
            self.reply(200, json.dumps(ans).encode())
    return H


class Upstream(Quiet):
    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        try:
            msg = json.loads(body)
            rid = msg.get("id")
        except ValueError:
            rid = None
        ans = {"jsonrpc": "2.0", "id": rid, "result": {
            "tools": [{"name": "read_file"}, {"name": "delete_file"}], "content": []}}
        self.reply(200, json.dumps(ans).encode())

    def do_GET(self):
        # An SSE stream: an event every 200 ms for ~3 s, then the end.
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for i in range(15):
                ev = f"event: message\ndata: {{\"n\":{i}}}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                self.wfile.flush()
                time.sleep(0.2)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass


def serve(handler):
    srv = http.server.ThreadingHTTPServer((HOST, 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def config_text(port, admin, idp, up, token_file, generation, caches=None):
    """caches: (token_cache.max_entries, dpop.replay_cache_entries), or None for the
    defaults (100,000 and 1,000,000)."""
    tc = f"\ntoken_cache:\n  max_entries: {caches[0]}" if caches else ""
    rc = f"\n  replay_cache_entries: {caches[1]}" if caches else ""
    return f"""# soak config, generation {generation}{tc}
listen:
  address: {HOST}:{port}
  public_url: {PUBLIC}
  threads: 2
admin:
  address: {HOST}:{admin}
  token_file: {token_file}
dpop:
  nonce_secret: soak-nonce-secret-0123456789abcdef{rc}
issuers:
  - name: as
    issuer: {idp}
    jwks_uri: {idp}/jwks
    algorithms: [ES256]
  - name: opaque
    issuer: {idp}/opaque
    token_format: opaque
    introspection:
      endpoint: {idp}/introspect
      client_id: {INTRO_ID}
      client_secret: {INTRO_SECRET}
routes:
  - name: mcp
    path_prefix: /mcp
    upstream: {up}
    issuers: [as, opaque]
    scopes: [mcp:read]
    tools:
      "read_*": [mcp:read]
      "delete_*": [mcp:admin]
      "*": []
"""


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.lat = []
        self.ok = 0
        self.failed = 0
        self.fail_examples = []
        self.by_kind = {}

    def add(self, kind, took, good, what=""):
        with self.lock:
            self.lat.append(took)
            k = self.by_kind.setdefault(kind, [0, 0])
            if good:
                self.ok += 1
                k[0] += 1
            else:
                self.failed += 1
                k[1] += 1
                if len(self.fail_examples) < 20:
                    self.fail_examples.append(f"{time.strftime('%H:%M:%S')} {kind}: {what}")

    def take(self):
        with self.lock:
            lat, self.lat = self.lat, []
            return lat, self.ok, self.failed


def request(port, method, path, headers, body=None, timeout=10):
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=dict(headers, Host="mcp.soak.example"))
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "target", "release", "mcpgate"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--caches", default=None, metavar="TOKENS,PROOFS",
                    help="token_cache.max_entries and dpop.replay_cache_entries (default: the "
                         "gateway's, 100000 and 1000000: at this load they are still filling "
                         "after 10 minutes, so RSS grows until they are full)")
    args = ap.parse_args()
    caches = tuple(int(x) for x in args.caches.split(",")) if args.caches else None
    work = tempfile.mkdtemp(prefix="mcpgate-soak-")
    idp_port = free_port()
    idp = f"http://{HOST}:{idp_port}"
    state = State(idp)
    idp_srv = http.server.ThreadingHTTPServer((HOST, idp_port), idp_handler(state))
    idp_srv.daemon_threads = True
    threading.Thread(target=idp_srv.serve_forever, daemon=True).start()
    up_srv = serve(Upstream)
    up = f"http://{HOST}:{up_srv.server_address[1]}"
    port, admin = free_port(), free_port()
    token_file = os.path.join(work, "admin-token")
    with open(token_file, "w") as f:
        f.write(ADMIN_TOKEN + "\n")
    cfg = os.path.join(work, "mcpgate.yaml")
    with open(cfg, "w") as f:
        f.write(config_text(port, admin, idp, up, token_file, 0, caches))
    log = open(os.path.join(work, "mcpgate.log"), "w")
    gw = subprocess.Popen([args.bin, "run", "--config", cfg], stdout=log, stderr=log,
                          env=dict(os.environ, RUST_LOG="info,mcpgate::audit=off"))
    stop = threading.Event()
    stats = Stats()
    samples = []
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if request(admin, "GET", "/readyz", {}, timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise SystemExit("gateway not ready in 30 s; log: " + os.path.join(work, "mcpgate.log"))

        dkey = Key("dpop")
        jkt = dkey.thumbprint()
        revoked = set()
        rlock = threading.Lock()

        def jwt(sub="alice", jti=None, cnf=False, scope="mcp:read", life=TOKEN_LIFE):
            now = int(time.time())
            k = state.signing_key()
            claims = {"iss": idp, "aud": AUD, "sub": sub, "client_id": "soak", "scope": scope,
                      "iat": now - 5, "exp": now + life, "jti": jti or os.urandom(8).hex()}
            if cnf:
                claims["cnf"] = {"jkt": jkt}
            return k.sign({"alg": "ES256", "typ": "at+jwt", "kid": k.kid}, claims)

        pool = {"tokens": [jwt(f"user{i}", life=900) for i in range(50)],
                "kid": state.signing_key().kid}
        call_ok = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                              "params": {"name": "read_file", "arguments": {"p": "x"}}})
        call_denied = call_ok.replace("read_file", "delete_file")
        listing = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})

        def one(kind):
            headers = {"Content-Type": "application/json",
                       "Accept": "application/json, text/event-stream"}
            body, want = listing, 200
            if kind == "cached":
                if pool["kid"] != state.signing_key().kid:
                    pool["tokens"] = [jwt(f"user{i}", life=900) for i in range(50)]
                    pool["kid"] = state.signing_key().kid
                headers["Authorization"] = "Bearer " + random.choice(pool["tokens"])
                body = call_ok
            elif kind == "first_seen":
                headers["Authorization"] = "Bearer " + jwt()
            elif kind == "denied_tool":
                headers["Authorization"] = "Bearer " + random.choice(pool["tokens"])
                body, want = call_denied, 403
            elif kind == "dpop":
                t = jwt(cnf=True)
                now = int(time.time())
                proof = dkey.sign({"typ": "dpop+jwt", "alg": "ES256", "jwk": dkey.jwk},
                                  {"jti": os.urandom(8).hex(), "htm": "POST", "htu": AUD,
                                   "iat": now,
                                   "ath": b64(hashlib.sha256(t.encode()).digest())})
                headers["Authorization"] = "DPoP " + t
                headers["DPoP"] = proof
            elif kind == "opaque":
                if not state.opaque or random.random() < 0.05:
                    state.opaque[os.urandom(16).hex()] = "opaque-user"
                headers["Authorization"] = "Bearer " + random.choice(list(state.opaque))
            elif kind == "revoked":
                with rlock:
                    if not revoked:
                        return
                    sub = random.choice(sorted(revoked))
                # Issued before the revocation (and past the skew): must be refused. It
                # lives TOKEN_LIFE like the others, so whatever the gateway keeps per
                # refused token reaches a steady state within the run.
                now = int(time.time())
                k = state.signing_key()
                t = k.sign({"alg": "ES256", "typ": "at+jwt", "kid": k.kid},
                           {"iss": idp, "aud": AUD, "sub": sub, "scope": "mcp:read",
                            "iat": now - 600, "exp": now + TOKEN_LIFE,
                            "jti": os.urandom(8).hex()})
                headers["Authorization"] = "Bearer " + t
                want = 401
            start = time.perf_counter()
            try:
                status, data = request(port, "POST", "/mcp", headers, body)
                good = status == want
                what = f"{status} {data[:160]!r}"
            except OSError as e:
                good, what = False, repr(e)
            stats.add(kind, time.perf_counter() - start, good, what)

        kinds = ["cached"] * 5 + ["first_seen", "denied_tool", "dpop", "opaque", "revoked"]

        def client():
            while not stop.is_set():
                one(random.choice(kinds))

        def streams():
            # Long SSE streams through the gateway: open, read a few events, close early or
            # read to the end.
            while not stop.is_set():
                t = random.choice(pool["tokens"])
                start = time.perf_counter()
                try:
                    c = http.client.HTTPConnection(HOST, port, timeout=10)
                    c.request("GET", "/mcp", headers={"Host": "mcp.soak.example",
                                                      "Authorization": "Bearer " + t,
                                                      "Accept": "text/event-stream"})
                    r = c.getresponse()
                    good = r.status == 200
                    n = random.choice([1, 5, 15])
                    for _ in range(n):
                        if not r.fp.readline():
                            break
                    c.close()
                    stats.add("sse", time.perf_counter() - start, good, f"{r.status}")
                except OSError as e:
                    stats.add("sse", time.perf_counter() - start, False, repr(e))

        def chores():
            generation = 0
            last_rotate = time.time()
            while not stop.wait(10):
                generation += 1
                with open(cfg + ".tmp", "w") as f:
                    f.write(config_text(port, admin, idp, up, token_file, generation, caches))
                os.replace(cfg + ".tmp", cfg)
                sub = f"revoked-{generation}"
                try:
                    st, data = request(admin, "POST", "/revocations",
                                       {"Authorization": "Bearer " + ADMIN_TOKEN,
                                        "Content-Type": "application/json"},
                                       json.dumps({"subject": sub}))
                    if st == 201:
                        with rlock:
                            revoked.add(sub)
                    else:
                        stats.add("revoke", 0, False, f"{st} {data[:120]!r}")
                except OSError as e:
                    stats.add("revoke", 0, False, repr(e))
                if time.time() - last_rotate >= 60:
                    state.rotate()
                    last_rotate = time.time()

        threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
        threads += [threading.Thread(target=streams, daemon=True) for _ in range(2)]
        threads.append(threading.Thread(target=chores, daemon=True))
        for t in threads:
            t.start()
        began = time.time()
        print(" t(s)  RSS(MiB)  fds  threads  requests  p50(ms)  p99(ms)  failed  reloads(ok/failed)",
          flush=True)
        while time.time() - began < args.seconds:
            time.sleep(10)
            lat, ok, failed = stats.take()
            rss = fds = nthreads = None
            with open(f"/proc/{gw.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1]) / 1024
                    if line.startswith("Threads:"):
                        nthreads = int(line.split()[1])
            fds = len(os.listdir(f"/proc/{gw.pid}/fd"))
            reloads = {"success": 0, "error": 0}
            try:
                for line in request(admin, "GET", "/metrics", {})[1].decode().splitlines():
                    for r in reloads:
                        if line.startswith(f'mcpgate_config_reloads_total{{result="{r}"}}'):
                            reloads[r] = int(float(line.split()[-1]))
            except OSError:
                pass
            lat.sort()
            p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else 0
            s = {"t": round(time.time() - began), "rss_mib": round(rss, 1), "fds": fds,
                 "threads": nthreads, "requests": len(lat), "p50_ms": round(p(0.5), 2),
                 "p99_ms": round(p(0.99), 2), "failed_total": failed, "ok_total": ok,
                 "reloads_ok": reloads["success"], "reloads_failed": reloads["error"]}
            samples.append(s)
            print(f"{s['t']:5d}  {s['rss_mib']:8.1f}  {fds:3d}  {nthreads:7d}  {len(lat):8d}"
                  f"  {s['p50_ms']:7.2f}  {s['p99_ms']:7.2f}  {failed:6d}"
                  f"  {reloads['success']}/{reloads['error']}", flush=True)
            if gw.poll() is not None:
                raise SystemExit(f"the gateway exited ({gw.returncode})")
    finally:
        stop.set()
        gw.send_signal(signal.SIGTERM)
        try:
            gw.wait(15)
        except subprocess.TimeoutExpired:
            gw.kill()
        idp_srv.shutdown()
        up_srv.shutdown()
    # Warm-up: the first minute. RSS trend after it: least-squares slope in MiB per minute.
    warm = [s for s in samples if s["t"] > 60] or samples
    slope = 0.0
    if len(warm) > 2:
        xs = [s["t"] / 60 for s in warm]
        ys = [s["rss_mib"] for s in warm]
        mx, my = statistics.mean(xs), statistics.mean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    summary = {
        "seconds": args.seconds, "samples": samples, "by_kind": stats.by_kind,
        "failed": stats.failed, "ok": stats.ok, "fail_examples": stats.fail_examples,
        "rss_slope_mib_per_min_after_warmup": round(slope, 3),
        "binary": os.path.abspath(args.bin),
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "samples"}, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)
    if stats.failed:
        print(f"the gateway's log (kept): {os.path.join(work, 'mcpgate.log')}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    bad_reloads = samples[-1]["reloads_failed"] if samples else 0
    sys.exit(1 if stats.failed or bad_reloads else 0)


if __name__ == "__main__":
    main()
