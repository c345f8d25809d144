-- make bench: the wrk script every closed-loop REST cell runs (scripts/bench_peers_load.py). It POSTs the body in
-- the file BENCH_BODY with the headers in BENCH_HEADERS ("Name: value" lines), and at the end prints one line,
-- "BENCH-WRK {json}", with the request count, wrk's error counters and latency percentiles in microseconds (enough
-- points for a CDF), so nothing has to parse wrk's human summary.
local body_file = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = body_file:read("*a")
body_file:close()
for line in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^\n]+") do
  local name, value = string.match(line, "^([^:]+):%s*(.*)$")
  if name then
    wrk.headers[name] = value
  end
end

-- 100 is left out: wrk's percentile(100) reads 0; the maximum goes in from latency.max instead.
local percentiles = { 1, 5, 10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 95, 97.5, 99, 99.5, 99.9 }

function done(summary, latency, requests)
  local points = {}
  for _, p in ipairs(percentiles) do
    points[#points + 1] = string.format("[%g, %d]", p, latency:percentile(p))
  end
  points[#points + 1] = string.format("[100, %d]", latency.max)
  local errors = summary.errors
  io.write(string.format(
    'BENCH-WRK {"requests": %d, "duration_us": %d, "bytes": %d, "errors": {"connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d}, "latency_us": {"min": %d, "mean": %f, "max": %d, ' ..
    '"percentiles": [%s]}}\n',
    summary.requests, summary.duration, summary.bytes, errors.connect, errors.read, errors.write, errors.status,
    errors.timeout, latency.min, latency.mean, latency.max, table.concat(points, ", ")))
end
