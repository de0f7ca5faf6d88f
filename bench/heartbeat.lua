-- wrk script: heartbeats from many distinct runtimes through the workspace key.
-- Each thread walks its own slice of the agent ids so every runtime is visited.
-- BENCH_START is where this run begins in the walk: the suite passes on where the last run
-- stopped, so that successive short runs visit the whole fleet instead of its first ids again.
-- With BENCH_DELAY_MS set, each connection waits that long after every answer (a paced,
-- sustained load rather than as fast as the server answers).
-- thread_index is a global set by setup() in each thread's own Lua state: a local of the same
-- name here would hide it, and every thread would send the same half of the agent ids.
local counter = 0
local threads = 1
local start = 0

local created = 0
function setup(thread)
  thread:set("thread_index", created)
  created = created + 1
end

function init(args)
  runtimes = tonumber(os.getenv("BENCH_RUNTIMES") or "1000")
  workspace = os.getenv("BENCH_WORKSPACE")
  key = os.getenv("BENCH_KEY")
  threads = tonumber(os.getenv("BENCH_THREADS") or "2")
  start = tonumber(os.getenv("BENCH_START") or "0")
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. key
end

function request()
  local n = (start + counter * threads + thread_index) % runtimes
  counter = counter + 1
  local agent = string.format("rt-%06d", n)
  local body = '{"workspace_id":"' .. workspace .. '","session_id":"' .. agent ..
    '","agent_id":"' .. agent .. '","health":{"busy":false}}'
  return wrk.format(nil, "/api/v1/heartbeat", nil, body)
end


local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if pause then
  function delay()
    return pause
  end
end
