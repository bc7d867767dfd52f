"""Turns the PostgreSQL log of two REST requests into pgbench scripts that replay exactly
what the server sent: the same prepared statements with the same parameter values bound
(pgbench -M prepared sends `:name` variables as parameters), the settings statement and the
request's statement pipelined under one Sync, as the server sends them.

Writes <out>/pk.sql, <out>/embed.sql and, next to each, <name>.sql.defs: the variables as
NUL-separated `name=value` items for pgbench's -D.
(Inlining the values as literals instead would let PostgreSQL fold them into the plan, a
cheaper statement than the one the server runs; BENCHMARKS.md has both.)"""
import re
import sys

log, out = sys.argv[1], sys.argv[2]
text = open(log).read()
# Entries: "LOG:  duration: ... execute <name>: SQL" possibly multi-line, then
# "DETAIL:  Parameters: $1 = '...', ..."
entries = re.split(r"\n(?=\S+ \S+ \S+ \[\d+\] )", text)
stmts = []
for i, e in enumerate(entries):
    m = re.search(r"execute [^:]*: (.*)$", e, re.S)
    if not m:
        continue
    values = {}
    nxt = entries[i + 1] if i + 1 < len(entries) else ""
    d = re.search(r"DETAIL:  [Pp]arameters: (.*)$", nxt, re.S)
    if d:
        for k, v in re.findall(r"\$(\d+) = ('(?:[^']|'')*'|NULL)", d.group(1)):
            assert v != "NULL", "pgbench variables cannot be NULL"
            values[int(k)] = v[1:-1].replace("''", "'")
    stmts.append((m.group(1).strip(), values))
setup = [s for s in stmts if "set_config(k, v, true)" in s[0]]
rest = [s for s in stmts if "pgrst_source" in s[0]]
assert len(setup) >= 2 and len(rest) == 2, (len(setup), len(rest))
for name, s_setup, s_rest in (("pk", setup[0], rest[0]), ("embed", setup[1], rest[1])):
    defs = []
    with open(f"{out}/{name}.sql", "w") as f:
        f.write("\\startpipeline\n")
        for tag, (sql, values) in (("s", s_setup), ("q", s_rest)):
            sql = re.sub(r"\$(\d+)", lambda m: f":{tag}{m.group(1)}", sql)
            f.write(sql.replace("\n", " ") + ";\n")
            defs += [f"{tag}{k}={v}" for k, v in values.items()]
        f.write("\\endpipeline\n")
    with open(f"{out}/{name}.sql.defs", "w") as f:
        f.write("\0".join(defs))
