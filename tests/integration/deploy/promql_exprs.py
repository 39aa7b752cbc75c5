"""Every PromQL expression of the Grafana dashboards and Prometheus rules in deploy/, with the
dashboard variables replaced by values Prometheus accepts."""
import glob
import json
import os
import re

import yaml

DEPLOY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "deploy")
DASHBOARDS = sorted(glob.glob(os.path.join(DEPLOY, "grafana", "*.json")))
RULES = os.path.join(DEPLOY, "prometheus", "moeserve.rules.yml")
RULE_TESTS = os.path.join(DEPLOY, "prometheus", "moeserve.rules.test.yml")
# Grafana's built-in interval variables, as a Prometheus with a 1 s scrape interval can use them.
VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
_ALERT = re.compile(r"^(?P<quantity>.*\S)\s*(==|!=|>=|<=|>|<)\s*(?P<threshold>-?[0-9.]+(e-?[0-9]+)?)\s*$",
                    re.S)


def substitute(expr):
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    if "$" in expr:
        raise ValueError(f"unknown dashboard variable in: {expr}")
    return expr


def dashboard_exprs():
    """(where, expr) for every panel target of every dashboard."""
    out = []
    for path in DASHBOARDS:
        with open(path) as f:
            dash = json.load(f)
        for panel in dash.get("panels", []):
            for target in panel.get("targets", []):
                where = f"{os.path.basename(path)}: {panel.get('title')} [{target.get('refId')}]"
                out.append((where, substitute(target["expr"])))
    return out


def rules():
    with open(RULES) as f:
        return yaml.safe_load(f)


def rule_exprs():
    """(where, expr, kind) for every rule; kind is 'record' or 'alert'."""
    out = []
    for group in rules()["groups"]:
        for rule in group["rules"]:
            kind = "record" if "record" in rule else "alert"
            out.append((f"{group['name']}: {rule[kind]}", rule["expr"].strip(), kind))
    return out


def alert_quantity(expr):
    """An alert `<quantity> <op> <number>`: the quantity, or None when it has another shape."""
    m = _ALERT.match(expr)
    return m.group("quantity").strip() if m else None


def metric_names(expr):
    """moeserve_* metric names an expression reads (histogram suffixes removed)."""
    names = set()
    for name in re.findall(r"\bmoeserve_[a-z0-9_]+", expr):
        names.add(re.sub(r"_(bucket|sum|count)$", "", name))
    return names
