-- wrk script of bench/run.sh. Configured by environment variables (read in every
-- thread's Lua state):
--   BENCH_TOKENS  file with one token per line: each request carries the next one
--                 (cycling), as "Authorization: Bearer <token>"
--   BENCH_BEARER  one token for every request (static request, no per-request Lua)
--   BENCH_BODY    file whose content is POSTed as application/json
--   BENCH_DPOP_PROOFS + BENCH_DPOP_TOKEN
--                 "Authorization: DPoP <token>" and the next proof of the file
--                 (one per line, each used once) in the "DPoP" header
-- done() prints one line "BENCH_JSON {...}" with throughput, latency percentiles and
-- error counts for bench/harness.py.
local tokens_file = os.getenv("BENCH_TOKENS")
local bearer = os.getenv("BENCH_BEARER")
local body_file = os.getenv("BENCH_BODY")
local dpop_file = os.getenv("BENCH_DPOP_PROOFS")
local dpop_token = os.getenv("BENCH_DPOP_TOKEN")

if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  wrk.method = "POST"
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Accept"] = "application/json, text/event-stream"
end
wrk.headers["Host"] = "mcp.bench.example"
if bearer and bearer ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. bearer
end

-- One pre-formatted request per line of a file, sent in order (cycling).
local function cycle(file, headers_of)
  local reqs = {}
  local n = 0
  local i = 0
  function init(args)
    for line in io.lines(file) do
      if #line > 0 then
        n = n + 1
        reqs[n] = wrk.format(nil, nil, headers_of(line))
      end
    end
    assert(n > 0, "no lines in " .. file)
  end
  function request()
    i = i + 1
    if i > n then i = 1 end
    return reqs[i]
  end
end

if dpop_file and dpop_file ~= "" then
  cycle(dpop_file, function(proof)
    return { ["Authorization"] = "DPoP " .. dpop_token, ["DPoP"] = proof }
  end)
elseif tokens_file and tokens_file ~= "" then
  cycle(tokens_file, function(token)
    return { ["Authorization"] = "Bearer " .. token }
  end)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
