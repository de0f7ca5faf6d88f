-- wrk script: heartbeats from many distinct runtimes through the workspace key.
-- Each thread walks its own slice of the agent ids (thread t the ids t, t + threads, ...), so
-- every runtime is visited in turn however the threads' rates differ.
-- BENCH_START is where each thread's walk begins in its slice ("p0,p1"): the suite passes on
-- where the last run stopped (done() prints how far each thread walked), so that successive
-- short runs visit the whole fleet instead of its first ids again.
-- With BENCH_DELAY_MS set, each connection waits that long after every answer (a paced,
-- sustained load rather than as fast as the server answers).
-- thread_index and counter are globals: setup() sets the first in each thread's own Lua state
-- and done() reads the second from it (a local of either name would hide it).
counter = 0
local threads = 1
local start = 0
local slice = 1

local created = 0
local made = {}
function setup(thread)
  thread:set("thread_index", created)
  table.insert(made, thread)
  created = created + 1
end

function init(args)
  runtimes = tonumber(os.getenv("BENCH_RUNTIMES") or "1000")
  workspace = os.getenv("BENCH_WORKSPACE")
  key = os.getenv("BENCH_KEY")
  threads = tonumber(os.getenv("BENCH_THREADS") or "2")
  local starts = {}
  for value in string.gmatch(os.getenv("BENCH_START") or "", "%d+") do
    table.insert(starts, tonumber(value))
  end
  start = starts[thread_index + 1] or 0
  slice = math.floor((runtimes - thread_index + threads - 1) / threads)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. key
end

function request()
  local n = thread_index + threads * ((start + counter) % slice)
  counter = counter + 1
  local agent = string.format("rt-%06d", n)
  local body = '{"workspace_id":"' .. workspace .. '","session_id":"' .. agent ..
    '","agent_id":"' .. agent .. '","health":{"busy":false}}'
  return wrk.format(nil, "/api/v1/heartbeat", nil, body)
end

function done(summary, latency, requests)
  local walked = {}
  for _, thread in ipairs(made) do
    table.insert(walked, tostring(thread:get("counter")))
  end
  io.write("walked: " .. table.concat(walked, ",") .. "\n")
end


local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if pause then
  function delay()
    return pause
  end
end
