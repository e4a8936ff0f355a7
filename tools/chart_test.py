#!/usr/bin/env python3
"""Renders charts/taskmesh with a real Helm engine (helm-python-sdk) for the default,
minikube and production values, validates every rendered object with kubernetes-validate
(strict), checks what each rendering must contain, and checks that the values schema
rejects bad values. Exits non-zero on the first failure, printing what failed."""

import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "taskmesh"
KUBERNETES = "1.30.0"
COMPONENTS = ["task", "reminder", "recurrence", "audit", "gateway"]


def fail(message):
    print(f"chart test FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def values_of(name):
    return yaml.safe_load((CHART / name).read_text()) if name else {}


def render(chart, values):
    merged = chart.merge_values(values)
    chart.validate_schema(merged)
    manifests = chart.render(merged, name="taskmesh", namespace="tasks", is_install=True)
    objects = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                objects.append((path, document))
    return objects, manifests


def check(chart, values_file):
    values = values_of(values_file)
    objects, manifests = render(chart, values)
    label = values_file or "default values"
    for path, obj in objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            check_rules(label, obj)
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES, strict=True)
        except Exception as error:  # kubernetes_validate raises several error types
            fail(f"{label}: {path} {obj.get('kind')}/{obj['metadata'].get('name')}: {error}")
    kinds = {}
    for _, obj in objects:
        kinds.setdefault(obj["kind"], []).append(obj)
    deployments = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in kinds.get("Deployment", [])}
    if sorted(deployments) != sorted(COMPONENTS):
        fail(f"{label}: deployments {sorted(deployments)}")
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        if container["args"] != ["serve", name]:
            fail(f"{label}: {name} runs {container['args']}")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if "grpc" not in container[probe]:
                fail(f"{label}: {name} {probe} is not a gRPC probe")
        security = container["securityContext"]
        if not (security["readOnlyRootFilesystem"] and security["runAsNonRoot"]):
            fail(f"{label}: {name} is not non-root and read-only")
        if "limits" not in container["resources"] or "requests" not in container["resources"]:
            fail(f"{label}: {name} has no requests and limits")
    if len(kinds.get("Service", [])) != len(COMPONENTS):
        fail(f"{label}: services")
    hooks = {
        obj["kind"]: int(obj["metadata"]["annotations"]["helm.sh/hook-weight"])
        for _, obj in objects
        if "helm.sh/hook" in obj["metadata"].get("annotations", {})
    }
    # The migration Job runs after the configuration it reads exists.
    if not (hooks.get("ConfigMap", 0) < hooks.get("Job", 0) and hooks.get("Secret", 0) < hooks.get("Job", 0)):
        fail(f"{label}: hook weights {hooks}")
    autoscaled = sum(1 for c in values.get("components", {}).values() if c["autoscaling"]["enabled"])
    if values_file is None:
        autoscaled = len(COMPONENTS)
    if len(kinds.get("HorizontalPodAutoscaler", [])) != autoscaled:
        fail(f"{label}: {len(kinds.get('HorizontalPodAutoscaler', []))} autoscalers, expected {autoscaled}")
    notes = next((text for path, text in manifests.items() if path.endswith("NOTES.txt")), "")
    if "taskmesh token" not in notes and "public keys" not in notes:
        fail(f"{label}: NOTES.txt does not say how tokens are issued")
    print(f"{label}: {len(objects)} objects valid for Kubernetes {KUBERNETES}: " + ", ".join(f"{len(v)} {k}" for k, v in sorted(kinds.items())))
    return objects


def check_rules(label, rule):
    """A PrometheusRule (a CRD kubernetes-validate has no schema for): its shape, and that
    every alert names only metrics taskmesh exports."""
    exported = {
        "taskmesh_outbox_backlog", "taskmesh_consumer_event_age_seconds_bucket",
        "taskmesh_consumer_events_total", "taskmesh_reminder_lateness_seconds_bucket",
        "taskmesh_rpc_requests_total",
    }
    groups = rule["spec"]["groups"]
    alerts = [r for g in groups for r in g["rules"]]
    if not alerts:
        fail(f"{label}: no alert rules")
    for alert in alerts:
        for key in ("alert", "expr", "labels", "annotations"):
            if key not in alert:
                fail(f"{label}: alert {alert.get('alert')} has no {key}")
        names = set(re.findall(r"taskmesh_[a-z_]+", alert["expr"]))
        if not names or not names <= exported:
            fail(f"{label}: alert {alert['alert']} uses {names - exported or 'no taskmesh metric'}")
    # promtool parses the PromQL and the templates (.ci/run installs it and requires it).
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("TASKMESH_REQUIRE_PROMTOOL"):
            fail("promtool is required")
        print(f"{label}: promtool not installed; rule syntax not checked")
        return
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as rules:
        yaml.safe_dump({"groups": groups}, rules)
        rules.flush()
        checked = subprocess.run([promtool, "check", "rules", rules.name], capture_output=True, text=True)
    if checked.returncode != 0:
        fail(f"{label}: promtool check rules: {checked.stdout}{checked.stderr}")


def rejected(chart, change, why):
    values = copy.deepcopy(chart.values)
    change(values)
    try:
        chart.validate_schema(values)
    except helm.HelmError:
        return
    fail(f"the schema accepted {why}")


def main():
    chart = helm.Chart.load(str(CHART))
    lint = helm.lint(str(CHART))
    if lint and any(m.get("severity", "").upper() == "ERROR" for m in lint if isinstance(m, dict)):
        fail(f"lint: {lint}")
    check(chart, None)
    check(chart, "values-minikube.yaml")
    production = check(chart, "values-production.yaml")
    if not any(obj["kind"] == "Ingress" for _, obj in production):
        fail("production values render no Ingress")
    if not any(obj["kind"] == "PrometheusRule" for _, obj in production):
        fail("production values render no PrometheusRule")
    bad = [
        (lambda v: v["components"]["task"].__setitem__("port", 80), "a privileged port"),
        (lambda v: v["components"]["gateway"]["resources"]["limits"].__setitem__("memory", "lots"), "a bad quantity"),
        (lambda v: v.__setitem__("logFormat", "xml"), "an unknown log format"),
        (lambda v: v["database"].__setitem__("url", "mysql://x"), "a non-PostgreSQL URL"),
        (lambda v: v["kafka"].__setitem__("brokers", ""), "no Kafka brokers"),
        (lambda v: v["jwt"].__setitem__("secret", "short"), "a short JWT secret"),
        (lambda v: v["retention"].__setitem__("audit", "forever"), "a bad duration"),
        (lambda v: v["components"].__setitem__("billing", v["components"]["task"]), "an unknown component"),
        (lambda v: v["components"]["task"]["autoscaling"].__setitem__("targetCPUUtilizationPercentage", 150), "150% CPU"),
    ]
    for change, why in bad:
        rejected(chart, change, why)
    print(f"values schema rejects {len(bad)} kinds of bad values")


if __name__ == "__main__":
    main()
