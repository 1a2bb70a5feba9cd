-- wrk script of bench_overload.py: replays a request list (the spec's mix and Zipf
-- users, written by the benchmark) and counts answers by status class.
--
--   wrk -s wrk_mix.lua URL -- REQUESTS_FILE TOKEN MEAN_DELAY_MS
--
-- REQUESTS_FILE: one request per line, "METHOD<TAB>PATH<TAB>BODY" (BODY may be empty).
-- MEAN_DELAY_MS: each connection waits an exponentially distributed time of this mean
-- after each answer (0: closed loop, the next request at once). With many connections
-- and a mean much longer than an answer, the offered rate is close to
-- connections / mean, whatever the server does (the benchmark measures what it was).
-- Prints one JSON line at the end: requests, seconds, socket errors and the counts of
-- 2xx, 429, 503, other 4xx and other 5xx answers.

local threads = {}
local counter = 1

function setup(thread)
   thread:set("tid", counter)
   table.insert(threads, thread)
   counter = counter + 1
end

local reqs = {}
local n = 0
local i = 0
local mean_delay = 0
ok, r429, r503, r4xx, r5xx = 0, 0, 0, 0, 0

function init(args)
   local path, token = args[1], args[2]
   mean_delay = tonumber(args[3]) or 0
   local headers = { ["Authorization"] = "Bearer " .. token,
                     ["Content-Type"] = "application/json" }
   for line in io.lines(path) do
      local method, p, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
      if method then
         n = n + 1
         if body == "" then body = nil end
         reqs[n] = wrk.format(method, p, headers, body)
      end
   end
   if n == 0 then
      error("no requests in " .. path)
   end
   -- threads start at different places of the list
   i = ((tid - 1) * 104729) % n
   math.randomseed(tid * 7919)
end

function request()
   i = i % n + 1
   return reqs[i]
end

function delay()
   if mean_delay <= 0 then
      return 0
   end
   return -mean_delay * math.log(1 - math.random())
end

function response(status, headers, body)
   if status < 300 then
      ok = ok + 1
   elseif status == 429 then
      r429 = r429 + 1
   elseif status == 503 then
      r503 = r503 + 1
   elseif status < 500 then
      r4xx = r4xx + 1
   else
      r5xx = r5xx + 1
   end
end

function done(summary, latency, requests)
   local c = { ok = 0, r429 = 0, r503 = 0, r4xx = 0, r5xx = 0 }
   for _, t in ipairs(threads) do
      for k, _ in pairs(c) do
         c[k] = c[k] + t:get(k)
      end
   end
   local e = summary.errors
   io.write(string.format(
      '{"requests": %d, "seconds": %.3f, "errors": {"connect": %d, "read": %d, '
      .. '"write": %d, "timeout": %d}, "ok": %d, "r429": %d, "r503": %d, '
      .. '"r4xx": %d, "r5xx": %d}\n',
      summary.requests, summary.duration / 1e6, e.connect, e.read, e.write, e.timeout,
      c.ok, c.r429, c.r503, c.r4xx, c.r5xx))
end
