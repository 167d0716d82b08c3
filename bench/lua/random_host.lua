-- wrk script: every request carries a Host header picked at random among N names.
-- Usage: wrk ... -s bench/lua/random_host.lua URL -- N PATTERN PATH
--   N        number of hosts (e.g. 10000)
--   PATTERN  string.format pattern for the host names, with one %d (e.g. "v%d.vhost.test")
--   PATH     request path (e.g. /30)
-- The N requests are formatted once in init(); request() only picks one.
local reqs = {}
local n = 0

function init(args)
   n = tonumber(args[1]) or 10000
   local pattern = args[2] or "v%d.vhost.test"
   local path = args[3] or "/30"
   for i = 0, n - 1 do
      reqs[i + 1] = wrk.format("GET", path, { Host = string.format(pattern, i) })
   end
   math.randomseed(os.time())
end

function request()
   return reqs[math.random(n)]
end
