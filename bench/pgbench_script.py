"""Turns the PostgreSQL log of two REST requests into pgbench scripts that replay exactly
what the server sent, pipelined as the server pipelines it."""
import re
import sys

log, out = sys.argv[1], sys.argv[2]
text = open(log).read()
# Entries: "LOG:  duration: ... execute <name>: SQL" possibly multi-line, then "DETAIL:  Parameters: $1 = '...', ..."
def e_literal(v):
    """The same value as an E'' literal with every ':' escaped: pgbench reads `:name` as a
    variable reference, and claims and URLs are full of colons."""
    if v == "NULL":
        return v
    inner = v[1:-1].replace("''", "'")
    inner = inner.replace("\\", "\\\\").replace("'", "\\'").replace(":", "\\x3a")
    return "E'" + inner + "'"


entries = re.split(r"\n(?=\S+ \S+ \S+ \[\d+\] )", text)
stmts = []
for i, e in enumerate(entries):
    m = re.search(r"execute [^:]*: (.*)$", e, re.S)
    if not m:
        continue
    sql = m.group(1).strip()
    values = {}
    nxt = entries[i + 1] if i + 1 < len(entries) else ""
    d = re.search(r"DETAIL:  [Pp]arameters: (.*)$", nxt, re.S)
    if d:
        for k, v in re.findall(r"\$(\d+) = ('(?:[^']|'')*'|NULL)", d.group(1)):
            values[int(k)] = e_literal(v)
    sql = re.sub(r"\$(\d+)", lambda mm: values.get(int(mm.group(1)), mm.group(0)), sql)
    stmts.append(sql)
setup = [s for s in stmts if "set_config(k, v, true)" in s]
rest = [s for s in stmts if "pgrst_source" in s]
assert len(setup) >= 2 and len(rest) == 2, (len(setup), len(rest))
for name, s_setup, s_rest in (("pk", setup[0], rest[0]), ("embed", setup[1], rest[1])):
    with open(f"{out}/{name}.sql", "w") as f:
        # One pipeline, one Sync: an implicit transaction, as the server sends it.
        f.write("\\startpipeline\n")
        f.write(s_setup.replace("\n", " ") + ";\n")
        f.write(s_rest.replace("\n", " ") + ";\n")
        f.write("\\endpipeline\n")
