-- Shared by the benchmark's wrk scripts: at the end, writes the run's figures as JSON to the
-- file named by WRK_OUT (wrk's own summary still goes to stdout).
function done(summary, latency, requests)
  local errors = summary.errors
  local failed = errors.connect + errors.read + errors.write + errors.timeout
  local seconds = summary.duration / 1e6
  local out = io.open(os.getenv("WRK_OUT"), "w")
  out:write(string.format(
    '{"requests":%d,"seconds":%.3f,"per_second":%.1f,' ..
    '"p50_ms":%.3f,"p99_ms":%.3f,"p999_ms":%.3f,"max_ms":%.3f,' ..
    '"socket_errors":%d,"non_2xx":%d}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, latency.max / 1000,
    failed, errors.status))
  out:close()
end
