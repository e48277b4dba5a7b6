-- POST /signup with a new email each time: wrk thread id and a counter, under a per-run prefix.
dofile("bench/wrk/report.lua")
local password = os.getenv("PASSWORD")
local run = os.getenv("RUN") or tostring(os.time())
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
function request()
  counter = counter + 1
  local body = string.format('{"email":"s%s-%d-%d@bench.example.com","password":"%s"}',
                             run, id or 0, counter, password)
  return wrk.format(nil, "/signup", nil, body)
end
