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
        if obj["kind"] == "PrometheusRule":
            check_rules(label, obj)
            continue
        if obj["kind"] == "PodMonitor":
            check_pod_monitor(label, obj)
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
        # Liveness restarts only a broken process; readiness unroutes a starting or draining
        # one. Neither may use "" (also NOT_SERVING while Kafka or PostgreSQL is unreachable).
        for probe, service in (("startupProbe", "liveness"), ("readinessProbe", "readiness"), ("livenessProbe", "liveness")):
            if "grpc" not in container.get(probe, {}):
                fail(f"{label}: {name} {probe} is not a gRPC probe")
            if container[probe]["grpc"].get("service") != service:
                fail(f"{label}: {name} {probe} asks for grpc.health.v1 service "
                     f"{container[probe]['grpc'].get('service')!r}, expected {service!r}")
            # On the internal listener (TASKMESH_METRICS_LISTEN), apart from the public
            # port's connection cap and load shedding.
            internal = {p["containerPort"] for p in container["ports"] if p["name"] == "metrics"}
            if container[probe]["grpc"].get("port") not in internal:
                fail(f"{label}: {name} {probe} probes port {container[probe]['grpc'].get('port')}, "
                     f"not the internal listener {sorted(internal)}")
        security = container["securityContext"]
        if not (security["readOnlyRootFilesystem"] and security["runAsNonRoot"]):
            fail(f"{label}: {name} is not non-root and read-only")
        if "limits" not in container["resources"] or "requests" not in container["resources"]:
            fail(f"{label}: {name} has no requests and limits")
    if len(kinds.get("Service", [])) != len(COMPONENTS):
        fail(f"{label}: services")
    check_job(label, kinds)
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


def pod_specs(kinds):
    """(name, pod spec) of every Deployment and Job."""
    return [
        (f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"])
        for kind in ("Deployment", "Job")
        for obj in kinds.get(kind, [])
    ]


def containers_of(kinds):
    """(where, container, pod spec) of every container and initContainer of the Deployments
    and the Job."""
    return [
        (f"{where} {container['name']}", container, spec)
        for where, spec in pod_specs(kinds)
        for container in spec.get("initContainers", []) + spec["containers"]
    ]


def check_job(label, kinds):
    """The migration Job checks the configuration first (check-config, before the topics
    exist), then migrates, both as locked down as the components, with the same env and
    volumes."""
    jobs = kinds.get("Job", [])
    if len(jobs) != 1:
        fail(f"{label}: {len(jobs)} Jobs, expected the migration Job")
    spec = jobs[0]["spec"]["template"]["spec"]
    init = spec.get("initContainers", [])
    if [c["args"] for c in init] != [["check-config", "--skip-topics"]]:
        fail(f"{label}: the migration Job's initContainers run {[c['args'] for c in init]}, expected one running check-config --skip-topics")
    if [c["args"] for c in spec["containers"]] != [["migrate"]]:
        fail(f"{label}: the migration Job's containers run {[c['args'] for c in spec['containers']]}, expected migrate")
    check, migrate = init[0], spec["containers"][0]
    for key in ("image", "env", "envFrom", "volumeMounts", "securityContext"):
        if check.get(key) != migrate.get(key):
            fail(f"{label}: the migration Job's check-config and migrate containers differ in {key}")
    for where, container, pod in containers_of(kinds):
        security = container["securityContext"]
        if not (security.get("readOnlyRootFilesystem") and security.get("runAsNonRoot")):
            fail(f"{label}: {where} is not non-root and read-only")
        for mount in container.get("volumeMounts", []):
            if not mount.get("readOnly"):
                fail(f"{label}: {where} mounts {mount['name']} writable")


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def mounted_secret(where, container, pod, path):
    """The Secret volume (its `secret` dict) whose mount holds the file `path`, and the key
    projected there; fails when the file is not in a mounted Secret."""
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            volume = next((v for v in pod.get("volumes", []) if v["name"] == mount["name"]), None)
            if volume is None or "secret" not in volume:
                fail(f"{where}: {path} is in volume {mount['name']}, which is not a Secret volume")
            file = path[len(prefix):]
            items = volume["secret"].get("items")
            if items is not None and file not in {i["path"] for i in items}:
                fail(f"{where}: {path}: Secret volume {mount['name']} projects no file {file}")
            key = next((i["key"] for i in items or [] if i["path"] == file), file)
            return volume["secret"], key
    fail(f"{where}: {path} is in no volume mount")


def check_production(objects):
    """Strimzi + CloudNativePG: Kafka properties in the ConfigMap without secrets, the SASL
    password, the Kafka CA and the database CA from mounted Secrets, the URL from the
    CloudNativePG app Secret."""
    label = "values-production.yaml"
    kinds = {}
    for _, obj in objects:
        kinds.setdefault(obj["kind"], []).append(obj)
    config = kinds["ConfigMap"][0]["data"]
    ingress = values_of("values-production.yaml")["ingress"]
    ingress_host = ingress["host"]
    scheme = "https" if ingress["tls"]["enabled"] else "http"
    mcp_hosts = config.get("TASKMESH_MCP_ALLOWED_HOSTS", "").split(",")
    mcp_origins = config.get("TASKMESH_MCP_ALLOWED_ORIGINS", "").split(",")
    if ingress_host not in mcp_hosts or f"{scheme}://{ingress_host}" not in mcp_origins:
        fail(f"{label}: the MCP endpoint does not accept the Ingress host {ingress_host}: {mcp_hosts} {mcp_origins}")
    properties = config.get("TASKMESH_KAFKA_PROPERTIES")
    if not properties:
        fail(f"{label}: the ConfigMap has no TASKMESH_KAFKA_PROPERTIES")
    if "password" in properties.lower():
        fail(f"{label}: TASKMESH_KAFKA_PROPERTIES in the ConfigMap holds a password: {properties}")
    for secret in kinds.get("Secret", []):
        if "TASKMESH_KAFKA_PROPERTIES" in {**secret.get("data", {}), **secret.get("stringData", {})}:
            fail(f"{label}: Secret {secret['metadata']['name']} holds TASKMESH_KAFKA_PROPERTIES (it belongs in the ConfigMap)")
    pairs = dict(pair.split("=", 1) for pair in properties.split(","))
    if "ssl.ca.location" not in pairs:
        fail(f"{label}: TASKMESH_KAFKA_PROPERTIES has no ssl.ca.location: {properties}")
    containers = containers_of(kinds)
    if len(containers) != len(COMPONENTS) + 2:
        fail(f"{label}: {len(containers)} containers, expected one per component and two in the Job")
    for where, container, pod in containers:
        where = f"{label}: {where}"
        env = env_of(container)
        sasl = env.get("TASKMESH_KAFKA_SASL_PASSWORD_FILE", {}).get("value")
        if not sasl:
            fail(f"{where}: no TASKMESH_KAFKA_SASL_PASSWORD_FILE")
        secret, key = mounted_secret(where, container, pod, sasl)
        if secret["secretName"] != "taskmesh" or key != "password":
            fail(f"{where}: the SASL password is key {key} of Secret {secret['secretName']}, expected password of taskmesh (the KafkaUser's)")
        secret, key = mounted_secret(where, container, pod, pairs["ssl.ca.location"])
        if secret["secretName"] != "taskmesh-cluster-ca-cert" or key != "ca.crt":
            fail(f"{where}: ssl.ca.location is key {key} of Secret {secret['secretName']}, expected ca.crt of taskmesh-cluster-ca-cert")
        url = env.get("DATABASE_URL", {}).get("valueFrom", {}).get("secretKeyRef", {})
        if (url.get("name"), url.get("key")) != ("taskmesh-db-app", "uri"):
            fail(f"{where}: DATABASE_URL comes from {url}, expected key uri of Secret taskmesh-db-app")
        if env.get("PGSSLMODE", {}).get("value") != "verify-full":
            fail(f"{where}: PGSSLMODE is {env.get('PGSSLMODE')}, expected verify-full")
        root = env.get("PGSSLROOTCERT", {}).get("value")
        if not root:
            fail(f"{where}: no PGSSLROOTCERT")
        secret, key = mounted_secret(where, container, pod, root)
        if secret["secretName"] != "taskmesh-db-ca" or key != "ca.crt":
            fail(f"{where}: PGSSLROOTCERT is key {key} of Secret {secret['secretName']}, expected ca.crt of taskmesh-db-ca")
        for name, entry in env.items():
            if "value" in entry and "password" in name.lower() and not name.endswith("_FILE"):
                fail(f"{where}: {name} is a plain value")
    print(f"{label}: Kafka properties in the ConfigMap without secrets; SASL password, Kafka CA, "
          f"database URL and CA from the operators' Secrets in all {len(containers)} containers")


def check_pod_monitor(label, monitor):
    """A PodMonitor (a CRD): it scrapes the pods' `metrics` port at /metrics and selects the
    release's pods."""
    endpoints = monitor["spec"]["podMetricsEndpoints"]
    if [(e["port"], e["path"]) for e in endpoints] != [("metrics", "/metrics")]:
        fail(f"{label}: PodMonitor endpoints {endpoints}")
    selector = monitor["spec"]["selector"]["matchLabels"]
    if selector.get("app.kubernetes.io/instance") != "taskmesh":
        fail(f"{label}: PodMonitor selects {selector}")


def check_extras(chart):
    """The production values plus every extra a platform needs (extraEnv, envFrom, volumes,
    per component too): each lands where it should, and the result is valid Kubernetes."""
    values = values_of("values-production.yaml")
    values["extraEnv"] = [{"name": "EXTRA_ALL", "value": "1"}]
    values["extraEnvFrom"] = [{"secretRef": {"name": "extra-env"}}]
    values["extraVolumes"] = [{"name": "extra", "secret": {"secretName": "extra"}}]
    values["extraVolumeMounts"] = [{"name": "extra", "mountPath": "/etc/extra", "readOnly": True}]
    values["components"]["gateway"]["extraEnv"] = [{"name": "GATEWAY_ONLY", "value": "1"}]
    values["components"]["gateway"]["extraVolumes"] = [{"name": "gw", "emptyDir": {}}]
    values["components"]["gateway"]["extraVolumeMounts"] = [{"name": "gw", "mountPath": "/gw"}]
    values["topologySpreadConstraints"].append({
        "maxSkew": 2, "topologyKey": "example.com/rack", "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"tier": "backend"}},
    })
    label = "production values with extras"
    objects, _ = render(chart, values)
    kinds = {}
    for path, obj in objects:
        kinds.setdefault(obj["kind"], []).append(obj)
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES, strict=True)
        except Exception as error:  # kubernetes_validate raises several error types
            fail(f"{label}: {path} {obj.get('kind')}/{obj['metadata'].get('name')}: {error}")
    for where, container, pod in containers_of(kinds):
        env = env_of(container)
        gateway = "gateway" in where
        if "EXTRA_ALL" not in env or ("GATEWAY_ONLY" in env) != (gateway and "Deployment" in where):
            fail(f"{label}: {where} env {sorted(env)}")
        if {"secretRef": {"name": "extra-env"}} not in container.get("envFrom", []):
            fail(f"{label}: {where} envFrom {container.get('envFrom')}")
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        if "/etc/extra" not in mounts or ("/gw" in mounts) != (gateway and "Deployment" in where):
            fail(f"{label}: {where} mounts {sorted(mounts)}")
        volumes = {v["name"] for v in pod.get("volumes", [])}
        if "extra" not in volumes:
            fail(f"{label}: {where} volumes {sorted(volumes)}")
        if pod.get("priorityClassName") != "taskmesh":
            fail(f"{label}: {where} priorityClassName {pod.get('priorityClassName')}")
    for deployment in kinds["Deployment"]:
        name = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        names = [e["name"] for e in container.get("env", [])]
        if len(names) != len(set(names)):
            fail(f"{label}: {name} sets an env variable twice: {names}")
        # The binary names its service `taskmesh-<component>` from its arguments.
        if container["args"] != ["serve", name] or "OTEL_SERVICE_NAME" in names:
            fail(f"{label}: {name} args {container['args']}, env {names}")
        spread = pod.get("topologySpreadConstraints", [])
        selectors = [c.get("labelSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") for c in spread]
        # The chart's selector where the constraint has none; the user's own where it has one.
        if len(spread) != 3 or selectors != [name, name, None] or spread[2]["labelSelector"] != {"matchLabels": {"tier": "backend"}}:
            fail(f"{label}: {name} topologySpreadConstraints {spread}")
        if "prometheus.io/scrape" in deployment["spec"]["template"]["metadata"].get("annotations", {}):
            fail(f"{label}: {name} is annotated for scraping besides the PodMonitor")
    config = kinds["ConfigMap"][0]["data"]
    if config.get("OTEL_EXPORTER_OTLP_ENDPOINT") != "http://otel-collector.observability:4317":
        fail(f"{label}: OTEL_EXPORTER_OTLP_ENDPOINT {config.get('OTEL_EXPORTER_OTLP_ENDPOINT')}")
    if len(kinds.get("PodMonitor", [])) != 1:
        fail(f"{label}: {len(kinds.get('PodMonitor', []))} PodMonitors")
    print(f"{label}: extra env, envFrom, volumes and mounts (global and per component), "
          f"topology spread (a user's own selector kept), priority class, PodMonitor alone")


def check_examples(production):
    """The Strimzi and CloudNativePG examples (charts/taskmesh/examples) fit the production
    values: the topics taskmesh creates with their prefix, partitions and replicas, the
    KafkaUser whose Secret the chart mounts with the SASL mechanism it configures, ACLs on
    the topic and group prefixes, and the CloudNativePG Secrets the chart reads."""
    values = values_of("values-production.yaml")
    kafka = values["kafka"]
    docs = {}
    for name in ("strimzi.yaml", "cloudnativepg.yaml"):
        for doc in yaml.safe_load_all((CHART / "examples" / name).read_text()):
            docs.setdefault(doc["kind"], []).append(doc)
    cluster = kafka["brokers"].split("-kafka-bootstrap")[0]
    topics = {t["metadata"]["name"]: t for t in docs["KafkaTopic"]}
    expected = {f"{kafka['topicPrefix']}{t}{dlq}" for t in ("task-events", "reminders", "task-commands", "series-events") for dlq in ("", ".dlq")}
    if set(topics) != expected:
        fail(f"strimzi example: topics {sorted(topics)}, expected {sorted(expected)}")
    for name, topic in topics.items():
        spec = topic["spec"]
        if (spec["partitions"], spec["replicas"]) != (kafka["partitions"], kafka["replicationFactor"]):
            fail(f"strimzi example: {name} has {spec['partitions']} partitions, {spec['replicas']} replicas")
        if topic["metadata"]["labels"]["strimzi.io/cluster"] != cluster:
            fail(f"strimzi example: {name} is for cluster {topic['metadata']['labels']}")
    [user] = docs["KafkaUser"]
    if user["metadata"]["name"] != kafka["sasl"]["passwordSecret"]:
        fail(f"strimzi example: KafkaUser {user['metadata']['name']}, the chart reads Secret {kafka['sasl']['passwordSecret']}")
    mechanism = kafka["properties"]["sasl.mechanisms"].lower()
    if user["spec"]["authentication"]["type"] != mechanism:
        fail(f"strimzi example: the user authenticates with {user['spec']['authentication']['type']}, the chart with {mechanism}")
    acls = {(a["resource"]["type"], a["resource"].get("name"), a["resource"].get("patternType")) for a in user["spec"]["authorization"]["acls"]}
    for needed in (("topic", kafka["topicPrefix"], "prefix"), ("group", kafka["groupPrefix"], "prefix")):
        if needed not in acls:
            fail(f"strimzi example: no ACL on {needed}")
    if kafka["tls"]["caSecret"] != f"{cluster}-cluster-ca-cert":
        fail(f"production values: kafka.tls.caSecret {kafka['tls']['caSecret']} is not Strimzi's {cluster}-cluster-ca-cert")
    [db] = docs["Cluster"]
    name = db["metadata"]["name"]
    database = values["database"]
    if (database["existingSecret"], database["existingSecretKey"]) != (f"{name}-app", "uri"):
        fail(f"cloudnativepg example: the chart reads {database['existingSecret']}/{database['existingSecretKey']}, CloudNativePG writes {name}-app/uri")
    if database["tls"]["caSecret"] != f"{name}-ca":
        fail(f"cloudnativepg example: the chart mounts CA {database['tls']['caSecret']}, CloudNativePG's is {name}-ca")
    config = next(obj for _, obj in production if obj["kind"] == "ConfigMap")["data"]
    if config["TASKMESH_TOPIC_PREFIX"] != kafka["topicPrefix"]:
        fail(f"production: TASKMESH_TOPIC_PREFIX {config['TASKMESH_TOPIC_PREFIX']}")
    print(f"examples: {len(topics)} KafkaTopics, a KafkaUser and a CloudNativePG Cluster match the production values")


def check_rules(label, rule):
    """A PrometheusRule (a CRD kubernetes-validate has no schema for): its shape, and that
    every alert names only metrics taskmesh exports."""
    exported = {
        "taskmesh_outbox_backlog", "taskmesh_consumer_event_age_seconds_bucket",
        "taskmesh_consumer_events_total", "taskmesh_reminder_lateness_seconds_bucket",
        "taskmesh_rpc_requests_total", "taskmesh_consumer_lag_records",
        "taskmesh_background_task_degraded",
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
        if os.environ.get("TASKMESH_REQUIRE_PROMTOOL") == "1":
            fail("promtool is required")
        print(f"{label}: promtool not installed; rule syntax not checked")
        return
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as rules:
        yaml.safe_dump({"groups": groups}, rules)
        rules.flush()
        checked = subprocess.run([promtool, "check", "rules", rules.name], capture_output=True, text=True)
    if checked.returncode != 0:
        fail(f"{label}: promtool check rules: {checked.stdout}{checked.stderr}")


def check_oidc(chart):
    """Identity providers: the issuers' entries in TASKMESH_OIDC_ISSUER as the binary parses
    them (URL, then key=value options), and no generated HS256 secret beside them."""
    values = copy.deepcopy(chart.values)
    values["oidc"]["issuers"] = [
        {"url": "https://keycloak.example.com/realms/main", "rolesClaim": "realm_access.roles"},
        {"url": "https://accounts.google.com", "audience": "123.apps.googleusercontent.com",
         "userPrefix": "google:"},
    ]
    values["oidc"]["keysMaxAge"] = "1h"
    values["oidc"]["webClientId"] = "taskmesh-web"
    label = "OpenID Connect issuers"
    objects, _ = render(chart, values)
    config = next(obj for _, obj in objects if obj["kind"] == "ConfigMap")["data"]
    expected = ("https://keycloak.example.com/realms/main roles_claim=realm_access.roles, "
                "https://accounts.google.com audience=123.apps.googleusercontent.com user_prefix=google:")
    if config.get("TASKMESH_OIDC_ISSUER") != expected:
        fail(f"{label}: TASKMESH_OIDC_ISSUER is {config.get('TASKMESH_OIDC_ISSUER')!r}, expected {expected!r}")
    if (config.get("TASKMESH_OIDC_AUDIENCE"), config.get("TASKMESH_OIDC_ROLES_CLAIM"),
            config.get("TASKMESH_OIDC_KEYS_MAX_AGE"), config.get("TASKMESH_WEB_OIDC_CLIENT_ID"),
            config.get("TASKMESH_WEB_OIDC_SCOPES")) != ("taskmesh", "roles", "1h", "taskmesh-web",
                                                        "openid offline_access"):
        fail(f"{label}: audience, roles claim or keys max age not rendered: {config}")
    for _, obj in objects:
        if obj["kind"] == "Secret" and "TASKMESH_JWT_SECRET" in obj.get("stringData", {}):
            fail(f"{label}: a JWT secret is generated beside the identity providers")
    default, _ = render(chart, copy.deepcopy(chart.values))
    if any(obj["kind"] == "ConfigMap" and "TASKMESH_OIDC_ISSUER" in obj["data"] for _, obj in default):
        fail("default values set TASKMESH_OIDC_ISSUER")
    print(f"{label}: TASKMESH_OIDC_ISSUER with options as the binary parses them, no generated secret")


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
    # helm lint's report: {"messages": [{"severity", "path", "error"}], "errors": [...]};
    # severities are Helm's (1 info, 2 warning, 3 error).
    for values_file in (None, "values-minikube.yaml", "values-production.yaml"):
        lint = helm.lint(str(CHART), values_of(values_file))
        errors = list(lint.get("errors") or []) + [
            m for m in lint.get("messages") or []
            if m.get("severity") == 3 or str(m.get("severity")).upper() == "ERROR"
        ]
        if errors:
            fail(f"lint ({values_file or 'default values'}): {errors}")
    check(chart, None)
    check(chart, "values-minikube.yaml")
    production = check(chart, "values-production.yaml")
    check_production(production)
    if not any(obj["kind"] == "Ingress" for _, obj in production):
        fail("production values render no Ingress")
    if not any(obj["kind"] == "PrometheusRule" for _, obj in production):
        fail("production values render no PrometheusRule")
    check_extras(chart)
    check_oidc(chart)
    check_examples(production)
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
        # Kafka properties go into the ConfigMap: no secrets (the binary refuses them too).
        (lambda v: v["kafka"]["properties"].__setitem__("sasl.password", "x"), "kafka.properties[sasl.password]"),
        (lambda v: v["kafka"]["properties"].__setitem__("ssl.key.password", "x"), "kafka.properties[ssl.key.password]"),
        (lambda v: v["kafka"]["properties"].__setitem__("ssl.key.pem", "x"), "kafka.properties[ssl.key.pem]"),
        (lambda v: v["kafka"]["properties"].__setitem__("sasl.oauthbearer.client.secret", "x"), "a secret in kafka.properties"),
        (lambda v: v["kafka"]["properties"].__setitem__("debug", "broker,topic"), "a comma in a Kafka property"),
        (lambda v: v["kafka"]["sasl"].update(passwordSecret="taskmesh", password="x"), "both kafka.sasl.passwordSecret and password"),
        (lambda v: v["database"]["tls"].__setitem__("sslmode", "verify"), "a bad database.tls.sslmode"),
        (lambda v: v["database"]["tls"].__setitem__("bogus", "x"), "an unknown database.tls key"),
        (lambda v: v.__setitem__("corsAllowedOrigins", "evil.example"), "a CORS origin without a scheme"),
        (lambda v: v.__setitem__("corsAllowedOrigins", "https://app.example/path"), "a CORS origin with a path"),
        (lambda v: v["mcp"].__setitem__("allowedOrigins", "evil.example"), "an MCP origin without a scheme"),
        (lambda v: v["mcp"].__setitem__("allowedHosts", "a.example/path"), "an MCP host with a path"),
        (lambda v: v["mcp"].__setitem__("bogus", "x"), "an unknown mcp key"),
        (lambda v: v["limits"].__setitem__("maxStreamsPerUser", 0), "no live streams per user"),
        (lambda v: v.__setitem__("replicaCount", 3), "an unknown top-level value"),
        (lambda v: v["components"]["task"].__setitem__("extraEnv", [{"value": "x"}]), "an extraEnv entry without a name"),
        (lambda v: v["otel"].__setitem__("endpoint", "collector:4317"), "an OTLP endpoint without a scheme"),
        (lambda v: v["limits"].__setitem__("rateLimit", -1), "a negative rate limit"),
        (lambda v: v["jwt"].__setitem__("leeway", "soon"), "a bad JWT leeway"),
        (lambda v: v["oidc"].__setitem__("issuers", [{"url": "http://idp.example.com"}]), "a plain-http issuer off loopback"),
        (lambda v: v["oidc"].__setitem__("issuers", [{"url": "https://idp.example.com?x=1"}]), "an issuer with a query"),
        (lambda v: v["oidc"].__setitem__("issuers", [{"url": "https://a.example", "colour": "x"}]), "an unknown issuer key"),
        (lambda v: v["oidc"].__setitem__("issuers", [{"url": "https://a.example", "userPrefix": "a b"}]), "a user prefix with a space"),
        (lambda v: v["oidc"].__setitem__("issuers", [{"audience": "x"}]), "an issuer without a url"),
        (lambda v: v["oidc"].__setitem__("webClientId", "a b"), "a web client id with a space"),
    ]
    for change, why in bad:
        rejected(chart, change, why)
    print(f"values schema rejects {len(bad)} kinds of bad values")


if __name__ == "__main__":
    main()
