-- wrk script for Toru's benchmarks: optional bearer token / method / body from the
-- environment, and a done() hook that prints the run's numbers as one JSON line, so the
-- harness never has to parse wrk's human-oriented text.
--   BENCH_TOKEN   API token, sent as "Authorization: Bearer ..."
--   BENCH_METHOD  HTTP method (default GET)
--   BENCH_BODY    request body (sent with Content-Type: application/json)
--   BENCH_BODY_FILE  a file whose bytes are the request body (application/octet-stream;
--                 for bodies too large for an environment variable, e.g. 1 MiB)
local token = os.getenv("BENCH_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
local method = os.getenv("BENCH_METHOD")
if method and method ~= "" then
  wrk.method = method
end
local body = os.getenv("BENCH_BODY")
if body and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end
local body_file = os.getenv("BENCH_BODY_FILE")
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = "application/octet-stream"
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
