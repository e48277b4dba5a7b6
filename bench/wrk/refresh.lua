-- POST /token/refresh with refresh tokens from the file TOKENS (one live session per line). Each
-- thread keeps its own pool: a request takes a token out, its response puts the successor back,
-- so no token is ever presented twice (that would be a reuse, and end its session). The pool
-- must hold more tokens than the thread has connections.
dofile("bench/wrk/report.lua")
local all = {}
for line in io.lines(os.getenv("TOKENS")) do
  all[#all + 1] = line
end
local threads = 0
function setup(thread)
  thread:set("index", threads)
  threads = threads + 1
end
local pool = nil
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
function init(args)
  pool = {}
  local count = tonumber(os.getenv("THREADS") or "2")
  for i = 1, #all do
    if (i - 1) % count == index then
      pool[#pool + 1] = all[i]
    end
  end
end
function request()
  local token = table.remove(pool) or "exhausted"
  return wrk.format(nil, "/token/refresh", nil, '{"refresh_token":"' .. token .. '"}')
end
function response(status, headers, body)
  local token = body:match('"refresh_token":"([^"]+)"')
  if token then
    table.insert(pool, 1, token)
  end
end
