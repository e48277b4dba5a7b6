-- POST /login for USERS users in turn (bench0@bench.example.com …), all with the right password.
dofile("bench/wrk/report.lua")
local users = tonumber(os.getenv("USERS") or "8")
local password = os.getenv("PASSWORD")
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
function request()
  counter = counter + 1
  local body = string.format('{"email":"bench%d@bench.example.com","password":"%s"}',
                             counter % users, password)
  return wrk.format(nil, "/login", nil, body)
end
