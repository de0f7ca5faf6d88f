-- wrk script: config pulls that already hold the current ETag (answered 304).
function init(args)
  wrk.method = "GET"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
  wrk.headers["If-None-Match"] = os.getenv("BENCH_ETAG")
end
