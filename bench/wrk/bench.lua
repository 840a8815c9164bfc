-- wrk script for bench/run.sh. BENCH_MODE (environment) picks the request:
--   direct    Twilio's Messages endpoint with a form body and Basic auth (the mock alone)
--   qiam      POST /api/sms with the QIAM extension's pretty-printed body, one number
--   distinct  the same body with a different number on every request (guard scenarios:
--             dedupe and the per-number rate limit see no repeats)
-- At the end it prints one line `WRK_JSON {...}`: completed requests, duration, errors,
-- and latency percentiles in microseconds.

local mode = os.getenv("BENCH_MODE") or "qiam"
local text = "Your SMS code is 123456 and is valid for 5 minutes."

local function qiam_body(mobile)
  return '{\n  "mobile": "' .. mobile .. '",\n  "totp": "' .. text .. '",\n  "used": false\n}'
end

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  if mode == "direct" then
    wrk.method = "POST"
    wrk.path = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json"
    wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
    -- base64("AC0123456789abcdef0123456789abcdef:x")
    wrk.headers["Authorization"] = "Basic QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjp4"
    wrk.body = "To=%2B5511966191717&Body=Your+SMS+code+is+123456+and+is+valid+for+5+minutes.&From=%2B14155550100"
  else
    wrk.method = "POST"
    wrk.path = "/api/sms"
    wrk.headers["Content-Type"] = "application/json"
    wrk.headers["Accept"] = "application/json"
    wrk.body = qiam_body("+5511966191717")
  end
  counter = 0
  -- Numbers +55 11 9xxxx-xxxx (Sao Paulo mobiles): each thread owns 10^7 of them.
  base = 900000000 + (id or 0) * 10000000
end

if mode == "distinct" then
  request = function()
    counter = counter + 1
    local mobile = string.format("+5511%09d", base + (counter % 10000000))
    return wrk.format(nil, nil, nil, qiam_body(mobile))
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d,' ..
    '"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
