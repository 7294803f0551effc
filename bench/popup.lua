-- wrk script: every request is a random path from a file of URL paths
-- (one per line, as written by make_queries.py).
-- usage: wrk -t1 -c32 -d5s --latency -s popup.lua http://127.0.0.1:PORT -- QUERIES.txt
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

local paths = {}
function init(args)
  local file = args[1] or "/tmp/queries.txt"
  for line in io.lines(file) do
    if #line > 0 then paths[#paths + 1] = line end
  end
  if #paths == 0 then error("no paths in " .. file) end
  math.randomseed(1000 + (tid or 0))
end

function request()
  return wrk.format("GET", paths[math.random(#paths)])
end
