"""Turns the PostgreSQL log of two REST requests into pgbench scripts that replay exactly
what the server sent, pipelined as the server pipelines it."""
import re
import sys

log, out = sys.argv[1], sys.argv[2]
text = open(log).read()
# Entries: "LOG:  duration: ... execute <name>: SQL" possibly multi-line, then "DETAIL:  Parameters: $1 = '...', ..."
entries = re.split(r"\n(?=\S+ \S+ \S+ \[\d+\] )", text)
stmts = []
for e in entries:
    m = re.search(r"execute [^:]*: (.*?)(?:\n\S+ \S+ \S+ \[\d+\] DETAIL:  Parameters: (.*))?$", e, re.S)
    if not m:
        continue
    sql, params = m.group(1).strip(), m.group(2)
    values = {}
    if params:
        for k, v in re.findall(r"\$(\d+) = ('(?:[^']|'')*'|NULL)", params):
            values[int(k)] = v
    sql = re.sub(r"\$(\d+)", lambda mm: values.get(int(mm.group(1)), mm.group(0)), sql)
    stmts.append(sql)
setup = [s for s in stmts if "set_config(k, v, true)" in s]
rest = [s for s in stmts if "pgrst_source" in s]
assert len(setup) >= 2 and len(rest) == 2, (len(setup), len(rest))
for name, s_setup, s_rest in (("pk", setup[0], rest[0]), ("embed", setup[1], rest[1])):
    with open(f"{out}/{name}.sql", "w") as f:
        f.write("\\startpipeline\nbegin isolation level read committed read only;\n")
        f.write(s_setup.replace("\n", " ") + ";\n")
        f.write(s_rest.replace("\n", " ") + ";\n")
        f.write("commit;\n\\endpipeline\n")
