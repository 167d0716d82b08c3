-- wrk script: random Host among N names (as random_host.lua), and each connection waits DELAY_MS
-- after every response (as paced.lua), so the proxy is loaded without being saturated.
-- Usage: wrk ... -s bench/lua/random_host_paced.lua URL -- N PATTERN PATH DELAY_MS
local reqs = {}
local n = 0
local pause = 5

function init(args)
   n = tonumber(args[1]) or 10000
   local pattern = args[2] or "v%d.vhost.test"
   local path = args[3] or "/30"
   pause = tonumber(args[4]) or 5
   for i = 0, n - 1 do
      reqs[i + 1] = wrk.format("GET", path, { Host = string.format(pattern, i) })
   end
   math.randomseed(os.time())
end

function request()
   return reqs[math.random(n)]
end

function delay()
   return pause
end
