-- GET /profile, each request with the next token from the file TOKENS (one per line): tokens the
-- service has not seen yet, so each verification misses the cache of verified tokens.
dofile("bench/wrk/report.lua")
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do
  tokens[#tokens + 1] = "Bearer " .. line
end
local counter = 0
function setup(thread)
  -- Each thread starts elsewhere in the list, so threads do not share tokens.
  thread:set("offset", math.floor(#tokens / 2) * counter)
  counter = counter + 1
end
local n = 0
function request()
  n = n + 1
  local token = tokens[((offset or 0) + n) % #tokens + 1]
  return wrk.format("GET", "/profile", { ["Authorization"] = token })
end
