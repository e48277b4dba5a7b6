-- GET the URL's path, nothing else: the plain HTTP ceiling and /profile (with a token from TOKEN).
dofile("bench/wrk/report.lua")
local token = os.getenv("TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
