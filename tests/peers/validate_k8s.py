#!/usr/bin/env python3
# Offline validation of every manifest under k8s/ (run by tests/k8s_manifests.rs).
"""Validate k8s/ without a cluster or network.

- Kubernetes kinds: kubernetes-validate's strict JSON schemas for K8S_VERSION (unknown fields
  and wrong types rejected).
- Istio CRs (networking.istio.io, security.istio.io): cloudcoil-models-istio's pydantic models,
  made strict here (extra="forbid" on every model, so a misspelt field is an error), plus
  duration syntax, which the models leave as plain strings.
- IstioOperator: not in cloudcoil; a focused check of the keys this overlay uses against the
  field names of Istio 1.22's API (operator.proto, values_types.proto, mesh ProxyConfig), the
  injection templates validated as pod specs, and the cross-file facts the setup relies on.
- Seccomp profile: shape, a fail-closed default action, every syscall name known to libseccomp
  (the library runc/crun load profiles with) for x86_64 or aarch64, io_uring allowed, the
  denied set of k8s/seccomp/gen_profile.py never allowed.
- Dockerfile: the final stage is Istio's proxyv2 at the version the proxy image is tagged with,
  and the binary lands where meshConfig.defaultConfig.binaryPath says.

Then every check is shown able to fail: broken copies of k8s/ (one mutation each) must be
rejected. Exit 0 only when the real tree passes and every broken copy is rejected.

    validate_k8s.py [K8S_DIR]
"""

import importlib.util
import inspect
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

sys.dont_write_bytecode = True  # importing k8s/seccomp/gen_profile.py leaves no __pycache__

import kubernetes_validate  # noqa: E402
import pydantic
import yaml
from cloudcoil import apimachinery, resources
from cloudcoil import pydantic as cc_pydantic
from cloudcoil.models.istio.networking import v1 as istio_networking_v1
from cloudcoil.models.istio.security import v1 as istio_security_v1

K8S_VERSION = "1.30"
ISTIO_API_VERSIONS = {"networking.istio.io/v1", "security.istio.io/v1"}

# Field names from Istio 1.22's APIs (istio/api operator/v1alpha1/operator.proto,
# mesh/v1alpha1/proxy.proto; istio/istio operator/pkg/apis/istio/v1alpha1/values_types.proto),
# in their JSON (camelCase) spelling. Only the levels this overlay descends into.
OPERATOR_SPEC_KEYS = {
    "profile", "installPackagePath", "hub", "tag", "resourceSuffix", "namespace", "revision",
    "compatibilityVersion", "meshConfig", "components", "values", "unvalidatedValues",
}
OPERATOR_COMPONENT_KEYS = {
    "base", "pilot", "cni", "ztunnel", "istiodRemote", "ingressGateways", "egressGateways",
}
OPERATOR_GATEWAY_KEYS = {"enabled", "namespace", "name", "label", "hub", "tag", "k8s"}
MESH_PROXY_CONFIG_KEYS = {
    "configPath", "binaryPath", "serviceCluster", "tracingServiceName", "drainDuration",
    "discoveryAddress", "discoveryRefreshDelay", "zipkinAddress", "statsdUdpAddress",
    "envoyMetricsServiceAddress", "proxyAdminPort", "availabilityZone",
    "controlPlaneAuthPolicy", "customConfigFile", "statNameLength", "concurrency",
    "proxyBootstrapTemplatePath", "interceptionMode", "tracing", "sds",
    "envoyAccessLogService", "envoyMetricsService", "proxyMetadata", "runtimeValues",
    "statusPort", "extraStatTags", "gatewayTopology", "terminationDrainDuration", "meshId",
    "readinessProbe", "proxyStatsMatcher", "holdApplicationUntilProxyStarts",
    "caCertificatesPem", "image", "privateKeyProvider", "proxyHeaders",
}
VALUES_KEYS = {
    "cni", "gateways", "global", "pilot", "ztunnel", "telemetry", "sidecarInjectorWebhook",
    "istio_cni", "revision", "ownerName", "meshConfig", "base", "istiodRemote",
    "revisionTags", "defaultRevision", "profile", "compatibilityVersion", "experimental",
}
VALUES_GLOBAL_KEYS = {
    "arch", "certSigners", "configRootNamespace", "configValidation",
    "defaultConfigVisibilitySettings", "defaultNodeSelector", "defaultPodDisruptionBudget",
    "defaultResources", "defaultTolerations", "hub", "imagePullPolicy", "imagePullSecrets",
    "istioNamespace", "logAsJson", "logging", "meshID", "meshNetworks", "multiCluster",
    "network", "podDNSSearchNamespaces", "omitSidecarInjectorConfigMap",
    "operatorManageWebhooks", "priorityClassName", "proxy", "proxy_init", "sds", "tag",
    "variant", "tracer", "useMCP", "remotePilotAddress", "istiod", "pilotCertProvider",
    "jwtPolicy", "sts", "revision", "mountMtlsCerts", "caAddress", "externalIstiod",
    "configCluster", "caName", "autoscalingv2API", "platform", "ipFamilies", "ipFamilyPolicy",
}
VALUES_PROXY_KEYS = {
    "autoInject", "clusterDomain", "componentLogLevel", "enableCoreDump",
    "excludeInboundPorts", "excludeIPRanges", "image", "includeIPRanges", "logLevel",
    "privileged", "readinessInitialDelaySeconds", "readinessPeriodSeconds",
    "readinessFailureThreshold", "startupProbe", "statusPort", "resources", "tracer",
    "excludeOutboundPorts", "lifecycle", "holdApplicationUntilProxyStarts",
    "includeInboundPorts", "includeOutboundPorts",
}
INJECTOR_KEYS = {
    "enableNamespacesByDefault", "reinvocationPolicy", "neverInjectSelector",
    "alwaysInjectSelector", "rewriteAppHTTPProbe", "injectedAnnotations", "objectSelector",
    "injectionURL", "templates", "defaultTemplates", "useLegacySelectors",
}
# Templates istiod ships (istio-discovery chart, files/*-template.yaml).
BUILTIN_TEMPLATES = {"sidecar", "gateway", "grpc-simple", "grpc-agent", "waypoint", "kube-gateway"}
INJECT_TEMPLATES_ANNOTATION = "inject.istio.io/templates"
SECCOMP_TYPES = {"RuntimeDefault", "Unconfined", "Localhost"}
# Go's time.ParseDuration syntax, which Istio's CRDs require of duration fields.
DURATION = re.compile(r"^(\d+(\.\d+)?(h|m|s|ms|us|µs|ns))+$")
DURATION_KEYS = {
    "fixedDelay", "timeout", "perTryTimeout", "interval", "baseEjectionTime", "idleTimeout",
    "connectTimeout", "maxConnectionDuration", "time", "maxRetryWait",
}
SECCOMP_TOP_KEYS = {
    "defaultAction", "defaultErrnoRet", "architectures", "archMap", "syscalls", "flags",
    "listenerPath", "listenerMetadata",
}
SECCOMP_RULE_KEYS = {"names", "action", "args", "errnoRet", "comment", "includes", "excludes"}
SECCOMP_ACTIONS = {
    "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY",
}
FAIL_CLOSED = {"SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD"}


class Invalid(Exception):
    pass


def load_generator(k8s_dir):
    path = k8s_dir / "seccomp" / "gen_profile.py"
    spec = importlib.util.spec_from_file_location("gen_profile", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_istio_models_strict():
    """Forbid unknown fields on every cloudcoil Istio model and on ObjectMeta."""
    classes = []
    for module in (istio_networking_v1, istio_security_v1, apimachinery):
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, pydantic.BaseModel)
                and not issubclass(obj, cc_pydantic.BaseBuilder)
                and obj.__module__ == module.__name__
            ):
                classes.append(obj)
    for cls in classes:
        cls.model_config["extra"] = "forbid"
    # Twice: a model's schema embeds its fields' models as they were when it was rebuilt.
    for _ in range(2):
        for cls in classes:
            cls.model_rebuild(force=True)


def walk(node, path=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}", key, value
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


def only_keys(node, allowed, where):
    if not isinstance(node, dict):
        raise Invalid(f"{where}: expected a mapping, got {type(node).__name__}")
    unknown = sorted(set(node) - allowed)
    if unknown:
        raise Invalid(f"{where}: unknown field(s) {unknown}")


def check_core(doc):
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        raise Invalid(f"Kubernetes {K8S_VERSION} schema: {e.message} at {list(e.path)}")
    except kubernetes_validate.SchemaNotFoundError:
        raise Invalid(f"no Kubernetes {K8S_VERSION} schema for {doc.get('apiVersion')} {doc.get('kind')}")
    for where, key, value in walk(doc):
        if key == "seccompProfile":
            check_seccomp_ref(value, where)


def check_seccomp_ref(ref, where):
    if ref.get("type") not in SECCOMP_TYPES:
        raise Invalid(f"{where}.type: {ref.get('type')!r} is not one of {sorted(SECCOMP_TYPES)}")
    if ref["type"] == "Localhost" and not ref.get("localhostProfile"):
        raise Invalid(f"{where}: type Localhost needs localhostProfile")


def check_istio_cr(doc):
    if doc.get("apiVersion") not in ISTIO_API_VERSIONS:
        raise Invalid(f"{doc.get('apiVersion')}: not one of {sorted(ISTIO_API_VERSIONS)}")
    try:
        cls = resources.get_model(doc["kind"], api_version=doc["apiVersion"])
    except Exception:
        raise Invalid(f"no Istio model for {doc['apiVersion']} {doc.get('kind')}")
    if not cls.__module__.startswith("cloudcoil.models.istio."):
        raise Invalid(f"no Istio model for {doc['apiVersion']} {doc.get('kind')}")
    try:
        cls.model_validate(doc)
    except pydantic.ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise Invalid(f"Istio model: {e.error_count()} error(s), first at {loc}: {first['msg']}")
    for where, key, value in walk(doc):
        if key in DURATION_KEYS and isinstance(value, str) and not DURATION.match(value):
            raise Invalid(f"{where}: {value!r} is not a duration (e.g. 2s, 100ms)")


def check_istio_operator(doc, ctx):
    only_keys(doc, {"apiVersion", "kind", "metadata", "spec"}, "IstioOperator")
    only_keys(doc.get("metadata", {}), {"name", "namespace", "labels", "annotations"}, "metadata")
    spec = doc.get("spec", {})
    only_keys(spec, OPERATOR_SPEC_KEYS, "spec")
    components = spec.get("components", {})
    only_keys(components, OPERATOR_COMPONENT_KEYS, "spec.components")
    for kind in ("ingressGateways", "egressGateways"):
        for i, gw in enumerate(components.get(kind, [])):
            only_keys(gw, OPERATOR_GATEWAY_KEYS, f"spec.components.{kind}[{i}]")
            if not isinstance(gw.get("enabled", True), bool):
                raise Invalid(f"spec.components.{kind}[{i}].enabled: not a boolean")
    default_config = spec.get("meshConfig", {}).get("defaultConfig", {})
    only_keys(default_config, MESH_PROXY_CONFIG_KEYS, "spec.meshConfig.defaultConfig")
    binary = default_config.get("binaryPath")
    if not isinstance(binary, str) or not binary.startswith("/"):
        raise Invalid("spec.meshConfig.defaultConfig.binaryPath: absolute path required")
    ctx["binaryPath"] = binary

    values = spec.get("values", {})
    only_keys(values, VALUES_KEYS, "spec.values")
    only_keys(values.get("global", {}), VALUES_GLOBAL_KEYS, "spec.values.global")
    proxy = values.get("global", {}).get("proxy", {})
    only_keys(proxy, VALUES_PROXY_KEYS, "spec.values.global.proxy")
    image = proxy.get("image", "")
    # Only a reference with "/" is taken whole by the injection templates.
    if "/" not in image or ":" not in image.rsplit("/", 1)[1]:
        raise Invalid(f"spec.values.global.proxy.image: {image!r} is not registry/name:tag")
    ctx["proxyImageTag"] = image.rsplit(":", 1)[1]

    injector = values.get("sidecarInjectorWebhook", {})
    only_keys(injector, INJECTOR_KEYS, "spec.values.sidecarInjectorWebhook")
    templates = injector.get("templates", {})
    for name, text in templates.items():
        where = f"sidecarInjectorWebhook.templates.{name}"
        if not isinstance(text, str):
            raise Invalid(f"{where}: a template is a string (Go template of a pod overlay)")
        overlay = yaml.safe_load(text)
        only_keys(overlay, {"metadata", "spec"}, where)
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "overlay"}}
        pod["spec"] = overlay.get("spec", {})
        try:
            check_core(pod)
        except Invalid as e:
            raise Invalid(f"{where} as a pod: {e}")
        for container in pod["spec"].get("containers", []):
            ref = container.get("securityContext", {}).get("seccompProfile")
            if container.get("name") == "istio-proxy" and ref and ref["type"] == "Localhost":
                ctx.setdefault("localhostProfiles", set()).add(ref["localhostProfile"])
    defaults = injector.get("defaultTemplates", [])
    if "sidecar" not in defaults:
        raise Invalid("defaultTemplates must keep 'sidecar' (else nothing is injected)")
    for name in defaults:
        if name not in BUILTIN_TEMPLATES and name not in templates:
            raise Invalid(f"defaultTemplates: {name!r} is neither built in nor defined")
    ctx["customTemplates"] = [n for n in defaults if n not in BUILTIN_TEMPLATES]
    if not ctx.get("localhostProfiles"):
        raise Invalid("no injection template gives istio-proxy a Localhost seccomp profile")


def resolve_syscall(gen, lib, name):
    return gen.known_syscall(lib, name)


def check_seccomp(path, gen, lib):
    try:
        profile = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise Invalid(f"not JSON: {e}")
    only_keys(profile, SECCOMP_TOP_KEYS, "profile")
    if profile.get("defaultAction") not in FAIL_CLOSED:
        raise Invalid(f"defaultAction {profile.get('defaultAction')!r}: not fail-closed")
    unconditional = set()
    for i, rule in enumerate(profile.get("syscalls", [])):
        where = f"syscalls[{i}]"
        only_keys(rule, SECCOMP_RULE_KEYS, where)
        if rule.get("action") not in SECCOMP_ACTIONS:
            raise Invalid(f"{where}.action: {rule.get('action')!r} unknown")
        names = rule.get("names")
        if not isinstance(names, list) or not names:
            raise Invalid(f"{where}.names: a non-empty list required")
        for name in names:
            if not isinstance(name, str) or not resolve_syscall(gen, lib, name):
                raise Invalid(f"{where}: {name!r} is no syscall libseccomp knows")
        if rule["action"] != "SCMP_ACT_ALLOW":
            continue
        if rule.get("args"):
            masks = [a for a in rule["args"] if a.get("op") == "SCMP_CMP_MASKED_EQ"]
            if names != ["clone"] or not any(
                a.get("index") == 0
                and a.get("value", 0) & gen.CLONE_NAMESPACE_FLAGS == gen.CLONE_NAMESPACE_FLAGS
                and a.get("valueTwo") == 0
                for a in masks
            ):
                raise Invalid(f"{where}: only clone without namespace flags may be conditional")
        else:
            unconditional |= set(names)
    for name in gen.IO_URING:
        if name not in unconditional:
            raise Invalid(f"{name} is not allowed: shardproxy needs io_uring")
    leaked = sorted(unconditional & gen.DENIED)
    if leaked:
        raise Invalid(f"allowed but denied by design (gen_profile.DENIED): {leaked}")


def dockerfile_facts(path):
    lines = path.read_text().splitlines()
    if not lines or not lines[0].startswith("#"):
        raise Invalid("must start with a comment line")
    text = "\n".join(lines)
    logical = re.sub(r"\\\n", " ", text).splitlines()
    args, stages = {}, []
    for line in logical:
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        op = words[0].upper()
        if op == "ARG" and "=" in words[1]:
            key, value = words[1].split("=", 1)
            args[key] = value
        elif op == "FROM":
            stages.append({"from": words[1], "name": words[3] if len(words) > 3 else None,
                           "lines": []})
        elif stages:
            stages[-1]["lines"].append(words)
    if len(stages) < 2:
        raise Invalid("expected a builder stage and a proxyv2 stage")
    final = stages[-1]
    if final["from"] != "docker.io/istio/proxyv2:${ISTIO_VERSION}":
        raise Invalid(f"final stage FROM {final['from']}: not docker.io/istio/proxyv2:${{ISTIO_VERSION}}")
    if "ISTIO_VERSION" not in args:
        raise Invalid("ARG ISTIO_VERSION=<version> missing")
    builders = {s["name"]: s for s in stages[:-1] if s["name"]}
    copies = [w for w in final["lines"] if w[0].upper() == "COPY" and w[1].startswith("--from=")]
    for words in copies:
        stage = builders.get(words[1].split("=", 1)[1])
        if stage and words[2].endswith("target/release/shardproxy"):
            built = any(
                w[0].upper() == "RUN" and "cargo build" in " ".join(w)
                and "--release" in w and "shardproxy" in w
                for w in stage["lines"]
            )
            if not built:
                raise Invalid("the stage the binary comes from runs no cargo build --release --bin shardproxy")
            return {"binary": words[3], "istio_version": args["ISTIO_VERSION"]}
    raise Invalid("no COPY --from=<builder> .../target/release/shardproxy in the final stage")


def check_tree(k8s_dir, gen, lib):
    """Every check over one k8s/ tree: (number of checks passed, [failures])."""
    passed, failures, ctx, docs = 0, [], {}, []

    def run(what, fn, *a):
        nonlocal passed
        try:
            fn(*a)
            passed += 1
        except Invalid as e:
            failures.append(f"{what}: {e}")
        except Exception as e:  # a crash on malformed input is a rejection too
            failures.append(f"{what}: {type(e).__name__}: {e}")

    for path in sorted(k8s_dir.rglob("*.y*ml")):
        rel = path.relative_to(k8s_dir)
        text = path.read_text()
        if not text.startswith("#"):
            failures.append(f"{rel}: must start with a comment line")
        try:
            loaded = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as e:
            failures.append(f"{rel}: YAML: {e}")
            continue
        for i, doc in enumerate(loaded):
            what = f"{rel}#{i} {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
            docs.append((what, doc))
            api = str(doc.get("apiVersion", ""))
            if api.startswith("install.istio.io/"):
                run(what, check_istio_operator, doc, ctx)
            elif api.split("/")[0].endswith("istio.io"):
                run(what, check_istio_cr, doc)
            else:
                run(what, check_core, doc)

    profiles = sorted((k8s_dir / "seccomp").glob("*.json"))
    if not profiles:
        failures.append("seccomp/: no profile")
    for path in profiles:
        run(f"seccomp/{path.name}", check_seccomp, path, gen, lib)

    def cross_checks():
        facts = dockerfile_facts(k8s_dir / "Dockerfile")
        if "binaryPath" not in ctx:
            raise Invalid("no IstioOperator with meshConfig.defaultConfig.binaryPath")
        if facts["binary"] != ctx["binaryPath"]:
            raise Invalid(f"Dockerfile puts shardproxy at {facts['binary']}, binaryPath is {ctx['binaryPath']}")
        if facts["istio_version"] != ctx["proxyImageTag"]:
            raise Invalid(f"proxyv2 {facts['istio_version']} but the proxy image is tagged {ctx['proxyImageTag']}")
        names = {f"profiles/{p.name}" for p in profiles}
        for ref in ctx["localhostProfiles"]:
            if ref not in names:
                raise Invalid(f"localhostProfile {ref} is none of k8s/seccomp's profiles {sorted(names)}")
        gateways = [d for _, d in docs if d.get("kind") == "Gateway"]
        pods = [d["spec"]["template"] for _, d in docs if d.get("kind") == "Deployment"]
        for pod in pods:
            listed = pod["metadata"].get("annotations", {}).get(INJECT_TEMPLATES_ANNOTATION)
            if listed is not None:
                chosen = [t.strip() for t in listed.split(",")]
                missing = [t for t in ctx["customTemplates"] if t not in chosen]
                if missing:
                    raise Invalid(f"a pod names its injection templates ({listed}) without {missing}")
        for gw in gateways:
            selector = gw["spec"].get("selector", {})
            if not any(selector.items() <= pod["metadata"].get("labels", {}).items() for pod in pods):
                raise Invalid(f"Gateway {gw['metadata']['name']} selects {selector}: no pod here has those labels")

    run("cross-file (Dockerfile, istio-values.yaml, seccomp, gateway)", cross_checks)
    return passed, failures


# Broken copies of k8s/: (what, file relative to k8s/, edit). An edit is (old, new) text, or a
# function of the parsed JSON for the seccomp profile, or (None, text) for a new file.
def _drop(name):
    def edit(p):
        p["syscalls"][0]["names"].remove(name)
    return edit


def _add(name):
    def edit(p):
        p["syscalls"][0]["names"].append(name)
    return edit


def _allow_all(p):
    p["defaultAction"] = "SCMP_ACT_ALLOW"


BROKEN = [
    ("Kubernetes field misspelt", "ingressgateway.yaml", ("replicas: 1", "replicaz: 1")),
    ("Kubernetes field of wrong type", "ingressgateway.yaml", ("port: 15021", "port: status")),
    ("Kubernetes kind unknown", "extra.yaml", (None, "# broken\napiVersion: v1\nkind: Frobnicator\nmetadata: {name: x}\n")),
    ("YAML syntax", "extra.yaml", (None, "# broken\nkind: [unclosed\n")),
    ("Istio field misspelt", "bookinfo/routing.yaml", ("  - match:", "  - matchh:")),
    ("Istio weight not a number", "bookinfo/routing.yaml", ("weight: 90", "weight: ninety")),
    ("Istio enum value", "bookinfo/peer-authentication.yaml", ("mode: STRICT", "mode: Strict")),
    ("Istio action", "bookinfo/authorization-deny.yaml", ("action: DENY", "action: REJECT")),
    ("Istio duration", "bookinfo/faults.yaml", ("fixedDelay: 2s", "fixedDelay: 2 seconds")),
    ("Istio apiVersion", "bookinfo/destination-rules.yaml", ("networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews", "networking.istio.io/v9\nkind: DestinationRule\nmetadata:\n  name: reviews")),
    ("first line not a comment", "bookinfo/faults.yaml", ("# BookInfo step 4", "BookInfo: step 4")),
    ("operator key misspelt", "istio-values.yaml", ("defaultTemplates:", "defaultTemplate:")),
    ("operator proxy key misspelt", "istio-values.yaml", ("binaryPath:", "binaryPth:")),
    ("binaryPath differs from the Dockerfile", "istio-values.yaml", ("binaryPath: /usr/local/bin/shardproxy", "binaryPath: /usr/local/bin/shardproxy2")),
    ("seccomp type misspelt in the template", "istio-values.yaml", ("type: Localhost", "type: LocalHost")),
    ("template points at another profile", "istio-values.yaml", ("localhostProfile: profiles/shardproxy.json", "localhostProfile: profiles/other.json")),
    ("sidecar template dropped", "istio-values.yaml", ("      - sidecar\n", "")),
    ("gateway pod without the shardproxy template", "ingressgateway.yaml", ("templates: gateway,shardproxy", "templates: gateway")),
    ("Gateway selects no pod", "ingressgateway.yaml", ("  selector:\n    istio: ingressgateway\n  servers:", "  selector:\n    istio: egressgateway\n  servers:")),
    ("Dockerfile binary elsewhere", "Dockerfile", ("/usr/local/bin/shardproxy\n# pilot", "/usr/bin/shardproxy\n# pilot")),
    ("Dockerfile proxyv2 version differs from the image tag", "Dockerfile", ("ARG ISTIO_VERSION=1.22.3", "ARG ISTIO_VERSION=1.23.0")),
    ("Dockerfile base not proxyv2", "Dockerfile", ("FROM docker.io/istio/proxyv2:${ISTIO_VERSION}", "FROM ubuntu:22.04")),
    ("seccomp without io_uring_setup", "seccomp/shardproxy.json", _drop("io_uring_setup")),
    ("seccomp name that is no syscall", "seccomp/shardproxy.json", _add("io_uring_frobnicate")),
    ("seccomp allows mount", "seccomp/shardproxy.json", _add("mount")),
    ("seccomp fails open", "seccomp/shardproxy.json", _allow_all),
]


def apply_edit(root, rel, edit):
    path = root / rel
    if callable(edit):
        profile = json.loads(path.read_text())
        edit(profile)
        path.write_text(json.dumps(profile, indent=2))
        return
    old, new = edit
    if old is None:
        path.write_text(new)
        return
    text = path.read_text()
    if old not in text:
        raise SystemExit(f"self-test edit for {rel} no longer applies: {old!r} not found")
    path.write_text(text.replace(old, new, 1))


def main():
    k8s_dir = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "k8s")
    gen = load_generator(k8s_dir)
    lib = gen.libseccomp()
    make_istio_models_strict()

    passed, failures = check_tree(k8s_dir, gen, lib)
    print(f"k8s/ (Kubernetes {K8S_VERSION} schemas, strict Istio models): {passed} checks passed")
    for f in failures:
        print(f"FAIL {f}")

    missed = []
    for what, rel, edit in BROKEN:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "k8s"
            shutil.copytree(k8s_dir, root)
            apply_edit(root, rel, edit)
            _, broken_failures = check_tree(root, gen, lib)
        if broken_failures:
            print(f"self-test rejected ({what}): {broken_failures[0].splitlines()[0]}")
        else:
            missed.append(what)
            print(f"FAIL self-test: a broken copy passed ({what}, {rel})")

    ok = not failures and not missed
    print(f"validate_k8s: {passed} checks and {len(BROKEN) - len(missed)} self-tests ok, {len(failures) + len(missed)} failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
