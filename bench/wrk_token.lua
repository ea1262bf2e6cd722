-- wrk script: send credd's token as Authorization, read from the file $CREDD_BENCH_TOKEN_FILE names
-- (so the token never appears on a command line); nginx gets the same header, which it ignores.
local path = os.getenv("CREDD_BENCH_TOKEN_FILE")
if path and path ~= "" then
  local f = assert(io.open(path, "rb"))
  wrk.headers["Authorization"] = f:read("*a")
  f:close()
end
