-- wrk script: each connection waits DELAY_MS after every response before sending its next
-- request, so the offered rate is about connections * 1000 / DELAY_MS per second, nearly the
-- same for every target. wrk starts a request's latency clock when it writes the request, so the
-- pause is not counted in the latency.
-- Usage: wrk ... -s bench/lua/paced.lua URL -- DELAY_MS
local pause = 5

function init(args)
   pause = tonumber(args[1]) or 5
end

function delay()
   return pause
end
