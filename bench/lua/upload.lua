-- wrk script: every request is a POST with a body of SIZE bytes (default 1 MiB) to the URL; the
-- backend (bench/lib/common.sh, location /upload) reads the whole body before its 30-byte answer.
-- Usage: wrk ... -s bench/lua/upload.lua URL -- SIZE
function init(args)
   local size = tonumber(args[1]) or 1048576
   wrk.method = "POST"
   wrk.body = string.rep("u", size)
   wrk.headers["Content-Type"] = "application/octet-stream"
end
