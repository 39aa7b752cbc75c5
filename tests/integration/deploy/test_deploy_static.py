#!/usr/bin/env python3
"""Offline checks of deploy/ monitoring files with the real tools: promtool check rules and test
rules; every dashboard and rule expression parses (promtool, as recording rules); every metric an
expression reads is documented in deploy/METRICS.md; every alert has the <quantity> <op> <number>
shape the live test relies on; dashboards validate against a JSON schema generated at test time
from @grafana/schema (and a broken copy does not).  Usage: test_deploy_static.py NODE_DIR WORKDIR"""
import copy
import json
import os
import subprocess
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import promql_exprs as px  # noqa: E402

NODE, WORK = sys.argv[1], sys.argv[2]
FAILS = []


def check(cond, what, detail=""):
    print(("ok   " if cond else "FAIL ") + what + ("" if cond or not detail else "\n" + detail),
          flush=True)
    if not cond:
        FAILS.append(what)


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    return r.returncode, r.stdout + r.stderr


os.makedirs(WORK, exist_ok=True)

rc, out = run(["promtool", "check", "rules", px.RULES])
check(rc == 0, "promtool check rules deploy/prometheus/moeserve.rules.yml", out)
rc, out = run(["promtool", "test", "rules", os.path.basename(px.RULE_TESTS)],
              cwd=os.path.dirname(px.RULE_TESTS))
check(rc == 0, "promtool test rules moeserve.rules.test.yml", out)

# Dashboard expressions as recording rules: promtool parses each one.
dash = px.dashboard_exprs()
check(len(dash) >= 40, f"{len(dash)} dashboard expressions found")
wrapped = {"groups": [{"name": "dashboards", "rules": [
    {"record": f"dashboard:expr:{i}", "expr": expr} for i, (_, expr) in enumerate(dash)]}]}
path = os.path.join(WORK, "dashboard_exprs.rules.yml")
with open(path, "w") as f:
    yaml.safe_dump(wrapped, f)
rc, out = run(["promtool", "check", "rules", path])
check(rc == 0, "every dashboard expression parses (promtool check rules)", out)
# The same check catches a broken expression (the check can fail).
broken = copy.deepcopy(wrapped)
broken["groups"][0]["rules"][0]["expr"] = "sum(rate(moeserve_gateway_requests_total[1m])"
with open(path, "w") as f:
    yaml.safe_dump(broken, f)
rc, _ = run(["promtool", "check", "rules", path])
check(rc != 0, "an unbalanced parenthesis is rejected")

documented = open(os.path.join(px.DEPLOY, "METRICS.md")).read()
rules = px.rule_exprs()
for where, expr in dash + [(w, e) for w, e, _ in rules]:
    for name in px.metric_names(expr):
        check(f"`{name}`" in documented or f"{name}`" in documented,
              f"{where}: {name} is documented in deploy/METRICS.md")
for where, expr, kind in rules:
    if kind == "alert":
        check(px.alert_quantity(expr) is not None, f"{where}: alert is <quantity> <op> <number>")

# Dashboards against the schema generated from @grafana/schema's TypeScript types.
schema = os.path.join(WORK, "dashboard.schema.json")
types = os.path.join(NODE, "node_modules", "@grafana", "schema", "dist", "types", "raw",
                     "dashboard", "x", "types.gen.d.ts")
rc, out = run([os.path.join(NODE, "node_modules", ".bin", "ts-json-schema-generator"),
               "--path", types, "--type", "Dashboard", "--no-type-check", "-o", schema])
check(rc == 0 and os.path.exists(schema), "dashboard schema generated from @grafana/schema", out)
ajv = os.path.join(NODE, "node_modules", ".bin", "ajv")


def validate(dashboard_path):
    return run([ajv, "validate", "--spec=draft7", "--strict=false", "-c", "ajv-formats",
                "-s", schema, "-d", dashboard_path], cwd=NODE)


uids = set()
for path in px.DASHBOARDS:
    with open(path) as f:
        d = json.load(f)
    for key in ("__inputs", "__requires", "__elements"):
        d.pop(key, None)
    clean = os.path.join(WORK, os.path.basename(path))
    with open(clean, "w") as f:
        json.dump(d, f)
    rc, out = validate(clean)
    check(rc == 0, f"{os.path.basename(path)} validates against the Grafana schema", out)
    check(d.get("uid") not in uids, f"{os.path.basename(path)} has a unique uid")
    uids.add(d.get("uid"))
    check(all(p.get("targets") for p in d["panels"]), f"{os.path.basename(path)}: every panel queries")
    # A typo'd key must fail, or the schema check proves nothing.
    bad = copy.deepcopy(d)
    bad["panels"][0]["gridPos"]["w"] = "wide"
    bad["titel"] = "typo"
    bad_path = os.path.join(WORK, "bad-" + os.path.basename(path))
    with open(bad_path, "w") as f:
        json.dump(bad, f)
    rc, _ = validate(bad_path)
    check(rc != 0, f"a broken copy of {os.path.basename(path)} is rejected")
check(len(uids) == 4, "four dashboards: overview, disaggregation, experts, KV cache")

if FAILS:
    print(f"\n{len(FAILS)} check(s) failed", flush=True)
    sys.exit(1)
print("all deploy checks passed")
