"""preview.validate: offline validation of rendered objects.

Custom resources are checked against the pinned upstream CRDs (the numbered points are
the constructs a plain JSON-Schema validator gets wrong with them).  Built-in kinds go
through kubernetes-validate's strict schemas.
"""

from __future__ import annotations

import copy
import re
import textwrap
import time

import jsonschema
import pytest

from preview import validate as v
from preview.validate import CrdRegistry, validate, validate_builtin, validate_custom

# Every test here reads the pinned CRD files.
pytestmark = pytest.mark.usefixtures("crds")

NS = "tikit"


def meta(name: str = "x", namespace: str | None = NS, **extra) -> dict:
    out = {"name": name, **extra}
    if namespace is not None:
        out["namespace"] = namespace
    return out


def cnpg_cluster(**spec) -> dict:
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": meta("pg-eu"),
        "spec": {"storage": {"size": "10Gi"}, **spec},
    }


def gateway(*listeners: dict, **spec) -> dict:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": meta("tikit"),
        "spec": {"gatewayClassName": "eg", "listeners": list(listeners), **spec},
    }


def listener(name: str, port: int = 80) -> dict:
    return {"name": name, "port": port, "protocol": "HTTP"}


def prometheus_rule(**group) -> dict:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": meta("tikit-alerts"),
        "spec": {"groups": [{"name": "tikit", "rules": [{"alert": "ApiDown", "expr": "up == 0", "for": "5m"}], **group}]},
    }


def chaos_schedule(**spec) -> dict:
    return {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "Schedule",
        "metadata": meta("pod-kill"),
        "spec": {
            "schedule": "@every 1h",
            "type": "PodChaos",
            "historyLimit": 2,
            "concurrencyPolicy": "Forbid",
            "podChaos": {"action": "pod-kill", "mode": "one", "selector": {"namespaces": [NS]}},
            **spec,
        },
    }


def scaled_object(**spec) -> dict:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": meta("workers"),
        "spec": {
            "scaleTargetRef": {"name": "workers"},
            "minReplicaCount": 2,
            "maxReplicaCount": 10,
            "triggers": [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}}],
            **spec,
        },
    }


def service_monitor(endpoint: dict | None = None, **spec) -> dict:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta("api"),
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "api"}},
            "endpoints": [endpoint or {"port": "metrics", "interval": "30s"}],
            **spec,
        },
    }


def cluster_issuer(**acme) -> dict:
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "ClusterIssuer",
        "metadata": {"name": "letsencrypt"},
        "spec": {
            "acme": {
                "server": "https://acme-v02.api.letsencrypt.org/directory",
                "privateKeySecretRef": {"name": "letsencrypt-account"},
                "solvers": [{"http01": {"gatewayHTTPRoute": {"parentRefs": [{"name": "tikit", "namespace": NS}]}}}],
                **acme,
            }
        },
    }


def deployment(**spec) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta("api", labels={"app.kubernetes.io/name": "api", "app.kubernetes.io/part-of": "tikit"}),
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "api"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "api"}},
                "spec": {
                    "containers": [
                        {
                            "name": "api",
                            "image": "ghcr.io/tikit/api:1.2.3",
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "512Mi"}},
                            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                        }
                    ]
                },
            },
            **spec,
        },
    }


def at(errors: list[str], path: str) -> list[str]:
    """The errors reported at exactly ``path``."""
    return [e for e in errors if e.startswith(f"{path}: ")]


def one_error_at(errors: list[str], path: str) -> str:
    found = at(errors, path)
    assert len(found) == 1 and len(errors) == 1, errors
    return found[0]


# --- fixtures of the real CRDs are valid -------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [
        cnpg_cluster(instances=3),
        gateway(listener("http"), listener("https", 443)),
        prometheus_rule(),
        chaos_schedule(),
        scaled_object(),
        service_monitor(),
        cluster_issuer(),
    ],
    ids=lambda o: o["kind"],
)
def test_valid_custom_resources_have_no_errors(obj):
    assert validate(obj) == []
    assert validate_custom(obj) == []


# --- point 1: Draft 4 (boolean exclusiveMinimum) ----------------------------------------


def test_point1_boolean_exclusive_minimum_is_draft4():
    assert validate(chaos_schedule(startingDeadlineSeconds=1)) == []
    error = one_error_at(validate(chaos_schedule(startingDeadlineSeconds=0)), "spec.startingDeadlineSeconds")
    assert "minimum of 0" in error


def test_point1_a_2020_12_validator_would_reject_one():
    """Why Draft 4 matters: 2020-12 reads `exclusiveMinimum: true` as the number 1."""
    node = v.default_registry().version("chaos-mesh.org/v1alpha1", "Schedule").schema["properties"]["spec"]["properties"][
        "startingDeadlineSeconds"
    ]
    assert node["exclusiveMinimum"] is True
    assert not jsonschema.Draft202012Validator({k: node[k] for k in ("type", "minimum", "exclusiveMinimum")}).is_valid(1)


# --- point 2: nullable ------------------------------------------------------------------


def test_point2_nullable_accepts_null():
    assert validate(chaos_schedule(startingDeadlineSeconds=None)) == []


def test_point2_null_is_rejected_where_not_nullable():
    error = one_error_at(validate(chaos_schedule(historyLimit=None)), "spec.historyLimit")
    assert "must be integer, not null" in error


# --- point 3: int-or-string ---------------------------------------------------------------


@pytest.mark.parametrize("port", [8080, "metrics"])
def test_point3_int_or_string_accepts_both(port):
    assert validate(service_monitor({"targetPort": port})) == []


@pytest.mark.parametrize("port", [[8080], 80.5, True])
def test_point3_int_or_string_rejects_other_types(port):
    error = one_error_at(validate(service_monitor({"targetPort": port})), "spec.endpoints[0].targetPort")
    assert "must be integer or string" in error


# --- point 4: unknown fields ---------------------------------------------------------------


def test_point4_typo_is_an_unknown_field_with_a_hint():
    errors = validate(cnpg_cluster(instanses=3))
    assert errors == ['spec.instanses: unknown field (did you mean "instances"?)']


def test_point4_unknown_nested_field():
    obj = cnpg_cluster()
    obj["spec"]["storage"]["sise"] = "1Gi"
    assert validate(obj) == ['spec.storage.sise: unknown field (did you mean "size"?)']


def test_point4_unknown_top_level_field():
    obj = cnpg_cluster()
    obj["data"] = {"a": "b"}
    assert validate(obj) == ["data: unknown field"]


def test_point4_status_is_not_unknown():
    obj = cnpg_cluster()
    obj["status"] = {"phase": "Cluster in healthy state"}
    assert validate(obj) == []


def test_point4_preserve_unknown_fields_accepts_anything():
    solver = {"dns01": {"webhook": {"groupName": "acme.example.com", "solverName": "x", "config": {"any": {"thing": [1]}}}}}
    assert validate(cluster_issuer(solvers=[solver])) == []


def test_point4_combinator_branches_do_not_close_objects():
    """Gateway addresses: the oneOf branches have `properties` but must not reject `value`."""
    addresses = [{"type": "IPAddress", "value": "10.0.0.1"}, {"type": "Hostname", "value": "lb.example.com"}]
    assert validate(gateway(listener("http"), addresses=addresses)) == []


def test_point4_metadata_is_strict_object_meta():
    obj = cnpg_cluster()
    obj["metadata"]["label"] = {"a": "b"}
    assert validate(obj) == ['metadata.label: unknown field (did you mean "labels"?)']


# --- point 5: defaults before required --------------------------------------------------------


def test_point5_cnpg_cluster_without_instances_is_valid():
    obj = cnpg_cluster()
    assert "instances" not in obj["spec"]
    assert validate(obj) == []
    assert "instances" not in obj["spec"], "validation must not change the caller's object"


def test_point5_trigger_authentication_oauth2_type_defaults():
    obj = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": meta("oauth"),
        "spec": {"oauth2": {"tokenUrl": "https://auth.example.com/token", "clientId": "tikit"}},
    }
    assert validate(obj) == []


def test_point5_without_defaults_the_required_check_would_fail():
    """Guard: the CNPG case really exercises point 5 (instances is required upstream)."""
    compiled = v.default_registry().version("postgresql.cnpg.io/v1", "Cluster")
    raw = [e.message for e in compiled.validator.iter_errors(cnpg_cluster())]
    assert raw == ["'instances' is a required property"]


def test_point5_defaults_are_validated_like_given_values():
    """A given wrong value is still wrong; defaults only fill absent fields."""
    assert at(validate(cnpg_cluster(instances=0)), "spec.instances")


def test_point5_apply_defaults_recurses_into_defaulted_values():
    schema = {
        "type": "object",
        "properties": {
            "outer": {
                "type": "object",
                "default": {},
                "properties": {"inner": {"type": "integer", "default": 3}},
            },
            "items": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string", "default": "d"}}}},
            "map": {"type": "object", "additionalProperties": {"type": "object", "properties": {"m": {"type": "boolean", "default": True}}}},
        },
    }
    value = {"items": [{}, {"k": "given"}], "map": {"a": {}}}
    v.apply_defaults(value, schema)
    assert value == {"outer": {"inner": 3}, "items": [{"k": "d"}, {"k": "given"}], "map": {"a": {"m": True}}}


# --- point 6: RE2 patterns ---------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["warn", "abort", "WARN", "Abort", ""])
def test_point6_partial_response_strategy_validates_without_re_error(strategy):
    assert validate(prometheus_rule(partial_response_strategy=strategy)) == []


def test_point6_partial_response_strategy_rejects_other_values():
    error = one_error_at(validate(prometheus_rule(partial_response_strategy="ignore")), "spec.groups[0].partial_response_strategy")
    assert "does not match '^(?i)(abort|warn)?$'" in error, "the message quotes the upstream pattern"


def test_point6_rewrite_of_mid_pattern_flags():
    assert v.re2_to_python("^(?i)(abort|warn)?$") == r"(?a)^(?i:(abort|warn)?\Z)"


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        ("a(?i)b|c", "aB", True),  # the flag applies after it...
        ("a(?i)b|c", "AB", False),  # ...not before it
        ("a(?i)b|c", "C", True),  # ...and survives the alternation (RE2 semantics)
        ("x((?i)y)z", "xYz", True),
        ("x((?i)y)z", "xYZ", False),  # the flag ends with its group
        ("^[a-z]+$", "abc\n", False),  # RE2 $ is end of text; Python's would match before \n
        (r"^\d+$", "١٢", False),  # RE2 \d is ASCII
        ("^[[:alpha:]]+$", "abc", True),
        ("^[]a]+$", "]a", True),
        (r"(?<name>a)\z", "a", True),
    ],
)
def test_point6_re2_semantics(pattern, text, matches):
    assert bool(v.compile_re2(pattern).search(text)) is matches


def test_point6_python_re_alone_fails_on_the_upstream_pattern():
    with pytest.raises(re.error):
        re.compile("^(?i)(abort|warn)?$")


# --- point 7: list types -------------------------------------------------------------------------


def test_point7_duplicate_gateway_listener_names_are_rejected():
    errors = validate(gateway(listener("http"), listener("http", 8080)))
    assert errors == ["spec.listeners[1]: duplicate entry: name='http', same as [0] (x-kubernetes-list-type: map)"]


def test_point7_distinct_listener_names_pass():
    assert validate(gateway(listener("http"), listener("http-alt", 8080))) == []


def test_point7_duplicate_rule_group_names_are_rejected():
    obj = prometheus_rule()
    obj["spec"]["groups"].append(copy.deepcopy(obj["spec"]["groups"][0]))
    assert at(validate(obj), "spec.groups[1]")


def test_point7_set_items_must_be_unique():
    errors = validate(service_monitor(scrapeProtocols=["PrometheusProto", "OpenMetricsText1.0.0", "PrometheusProto"]))
    assert errors == ["spec.scrapeProtocols[2]: duplicate value 'PrometheusProto', same as [0] (x-kubernetes-list-type: set)"]
    assert validate(service_monitor(scrapeProtocols=["PrometheusProto", "OpenMetricsText1.0.0"])) == []


# --- readable paths ---------------------------------------------------------------------------------


def test_keda_wrong_type_has_a_readable_path():
    obj = scaled_object(minReplicaCount="2")
    obj["spec"]["triggers"][0]["metadata"]["value"] = 70
    assert validate(obj) == [
        "spec.minReplicaCount: must be integer, not string '2'",
        "spec.triggers[0].metadata.value: must be string, not integer 70",
    ]


def test_required_field_is_named():
    obj = scaled_object()
    del obj["spec"]["scaleTargetRef"]
    assert validate(obj) == ["spec.scaleTargetRef: required field is missing"]


def test_format_ipv4_is_checked():
    errors = validate(gateway(listener("http"), addresses=[{"type": "IPAddress", "value": "10.0.0.300"}]))
    assert errors == ["spec.addresses[0].value: '10.0.0.300' is not a 'ipv4'"]


def test_enum_error():
    error = one_error_at(validate(chaos_schedule(concurrencyPolicy="Sometimes")), "spec.concurrencyPolicy")
    assert "'Sometimes' is not one of" in error


# --- metadata -------------------------------------------------------------------------------------


def test_metadata_name_is_required():
    obj = cnpg_cluster()
    del obj["metadata"]["name"]
    assert at(validate(obj), "metadata.name")


@pytest.mark.parametrize("name", ["PG", "pg_eu", "-pg", "pg-", "a" * 254])
def test_metadata_custom_resource_name_is_a_dns_subdomain(name):
    obj = cnpg_cluster()
    obj["metadata"]["name"] = name
    assert at(validate(obj), "metadata.name"), name


def test_metadata_custom_resource_name_may_have_dots():
    obj = cnpg_cluster()
    obj["metadata"]["name"] = "pg.eu-west"
    assert validate(obj) == []


def test_metadata_namespace_is_required_for_namespaced_kinds():
    obj = cnpg_cluster()
    del obj["metadata"]["namespace"]
    assert validate(obj) == ["metadata.namespace: required field is missing (Cluster is namespaced)"]


def test_metadata_namespace_is_a_dns_label():
    obj = cnpg_cluster()
    obj["metadata"]["namespace"] = "tikit.prod"
    assert at(validate(obj), "metadata.namespace")


@pytest.mark.parametrize(
    "obj",
    [
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": meta("eg"),
         "spec": {"controllerName": "gateway.envoyproxy.io/gatewayclass-controller"}},
        {**cluster_issuer(), "metadata": meta("letsencrypt")},
    ],
    ids=lambda o: o["kind"],
)
def test_metadata_cluster_scoped_kinds_have_no_namespace(obj):
    assert validate(obj) == [f"metadata.namespace: not allowed: {obj['kind']} is cluster-scoped"]
    without = copy.deepcopy(obj)
    del without["metadata"]["namespace"]
    assert validate(without) == []


def test_metadata_label_syntax():
    obj = cnpg_cluster()
    obj["metadata"]["labels"] = {
        "app.kubernetes.io/name": "pg",  # fine
        "a/b/c": "x",  # bad prefix
        "tikit.app/region": "-eu",  # bad value
        "UPPER.example.com/x": "y",  # prefix must be lower-case
        "long": "v" * 64,
    }
    errors = validate(obj)
    assert [e.split(": ")[0] for e in errors] == [
        "metadata.labels.long",
        'metadata.labels["UPPER.example.com/x"]',
        'metadata.labels["a/b/c"]',
        'metadata.labels["tikit.app/region"]',
    ], errors


def test_metadata_label_value_must_be_a_string():
    obj = cnpg_cluster()
    obj["metadata"]["labels"] = {"replicas": 3}
    assert validate(obj) == ["metadata.labels.replicas: must be string or null, not integer 3"]


# --- dispatch, unknown kinds, versions ---------------------------------------------------------------


def test_unknown_kind_in_a_known_group():
    obj = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute", "metadata": meta(), "spec": {}}
    [error] = validate(obj)
    assert error.startswith("<root>: no CRD for apiVersion 'gateway.networking.k8s.io/v1' kind 'GRPCRoute'")
    assert "HTTPRoute" in error


def test_unknown_group():
    [error] = validate({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": meta(), "spec": {}})
    assert error.startswith("<root>: no CRD for apiVersion 'example.com/v1' kind 'Widget'")


def test_unserved_version_names_the_served_ones():
    obj = cnpg_cluster()
    obj["apiVersion"] = "postgresql.cnpg.io/v2"
    assert validate(obj) == ["<root>: no CRD for apiVersion 'postgresql.cnpg.io/v2' kind 'Cluster': Cluster is served as postgresql.cnpg.io/v1"]


def test_served_non_storage_version_validates():
    obj = gateway(listener("http"))
    obj["apiVersion"] = "gateway.networking.k8s.io/v1beta1"
    assert validate(obj) == []


def test_gateway_api_group_is_custom_not_builtin():
    """gateway.networking.k8s.io ends in .k8s.io but is a CRD group."""
    assert not v.is_builtin("gateway.networking.k8s.io/v1", "Gateway")
    assert v.is_builtin("networking.k8s.io/v1", "NetworkPolicy")


def test_missing_api_version_or_kind():
    assert validate({"kind": "Deployment", "metadata": meta()}) == ["apiVersion: required field is missing"]
    assert validate({"apiVersion": "v1", "metadata": meta()}) == ["kind: required field is missing"]


def test_custom_validation_does_not_accept_builtin_kinds():
    [error] = validate_custom(deployment())
    assert "no CRD for apiVersion 'apps/v1' kind 'Deployment'" in error


# --- built-in kinds (kubernetes-validate, strict) ---------------------------------------------------


def test_k8s_version_is_the_target_minor():
    assert v.K8S_VERSION == "1.31"
    assert v.resolve_k8s_version("v1.31.4") == "1.31"


def test_builtin_deployment_is_valid():
    assert validate_builtin(deployment()) == []
    assert validate(deployment()) == []


def test_builtin_unknown_field_is_rejected_strictly():
    obj = deployment(replica=3)
    assert validate(obj) == ['spec.replica: unknown field (did you mean "replicas"?)']


def test_builtin_unknown_field_in_a_container():
    obj = deployment()
    obj["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    assert validate(obj) == [
        'spec.template.spec.containers[0].imagePullPolicyy: unknown field (did you mean "imagePullPolicy"?)'
    ]


def test_builtin_wrong_type_and_required():
    obj = deployment()
    obj["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    del obj["spec"]["selector"]
    assert validate(obj) == [
        "spec.selector: required field is missing",
        "spec.template.spec.containers[0].ports[0].containerPort: must be integer, not string '8080'",
    ]


@pytest.mark.parametrize("quantity", ["512MB", "lots", "1.5 Gi"])
def test_builtin_quantity_syntax_is_checked(quantity):
    obj = deployment()
    obj["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = quantity
    [error] = validate(obj)
    assert error.startswith("spec.template.spec.containers[0].resources.limits.memory: ")
    assert "is not a quantity" in error


def test_builtin_metadata_rules():
    obj = deployment()
    obj["metadata"]["name"] = "API"
    del obj["metadata"]["namespace"]
    assert validate(obj) == [
        "metadata.name: 'API' must be a DNS-1123 subdomain (lower-case alphanumerics, '-' and '.')",
        "metadata.namespace: required field is missing (Deployment is namespaced)",
    ]


def test_builtin_service_name_is_a_dns1035_label():
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": meta("1api"), "spec": {"ports": [{"port": 80}]}}
    assert at(validate(svc), "metadata.name")
    svc["metadata"]["name"] = "api"
    assert validate(svc) == []


def test_builtin_cluster_scoped_kinds():
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tikit"}}
    assert validate(ns) == []
    ns["metadata"]["namespace"] = "default"
    assert validate(ns) == ["metadata.namespace: not allowed: Namespace is cluster-scoped"]


def test_builtin_unknown_api_version():
    obj = deployment()
    obj["apiVersion"] = "apps/v1beta1"
    assert validate(obj) == ["<root>: no built-in schema for apiVersion 'apps/v1beta1' kind 'Deployment' in Kubernetes 1.31"]


# --- a synthetic CRD directory: $TIKIT_CRDS_DIR and the rewrites in isolation -------------------------

SYNTHETIC_CRD = textwrap.dedent(
    """\
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata:
      name: widgets.example.com
    spec:
      group: example.com
      names:
        kind: Widget
        plural: widgets
      scope: Cluster
      versions:
      - name: v1
        served: true
        storage: true
        schema:
          openAPIV3Schema:
            type: object
            properties:
              apiVersion: {type: string}
              kind: {type: string}
              metadata: {type: object}
              spec:
                type: object
                required: [size, mode]
                properties:
                  size:
                    x-kubernetes-int-or-string: true
                  mode:
                    type: string
                    default: fast
                  color:
                    type: string
                    nullable: true
                    enum: [red, blue]
                  code:
                    type: string
                    pattern: '^x-(?i)[a-z]+$'
                  extra:
                    type: object
                    x-kubernetes-preserve-unknown-fields: true
                    properties:
                      known: {type: string}
                  tags:
                    type: array
                    x-kubernetes-list-type: set
                    items: {type: string}
                  ports:
                    type: array
                    x-kubernetes-list-type: map
                    x-kubernetes-list-map-keys: [port, protocol]
                    items:
                      type: object
                      required: [port]
                      properties:
                        port: {type: integer}
                        protocol: {type: string, default: TCP}
      - name: v0
        served: false
        storage: false
        schema:
          openAPIV3Schema: {type: object}
    """
)


@pytest.fixture()
def synthetic(tmp_path, monkeypatch):
    """A CRD directory holding one made-up CRD, pinned in place of tikit/versions.py's."""
    from preview import crds

    path = tmp_path / "example" / "example.com_widgets.yaml"
    path.parent.mkdir()
    path.write_text(SYNTHETIC_CRD)
    monkeypatch.setenv(v.CRDS_ENV, str(tmp_path))
    monkeypatch.setattr(crds, "pinned_paths", lambda root: [root / "example" / "example.com_widgets.yaml"])
    return tmp_path


def widget(**spec) -> dict:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1, **spec}}


def test_synthetic_crds_dir_from_env(synthetic):
    assert v.crds_dir() == synthetic
    assert v.default_registry().root == synthetic
    assert validate(widget()) == []
    assert validate(widget(size="50%", color=None, tags=["a", "b"], ports=[{"port": 80}, {"port": 80, "protocol": "UDP"}])) == []


def test_synthetic_int_or_string_without_anyof(synthetic):
    assert validate(widget(size=[1])) == ["spec.size: must be integer or string, not array [1]"]


def test_synthetic_nullable_enum(synthetic):
    assert validate(widget(color="green"))[0].startswith("spec.color: 'green' is not one of")


def test_synthetic_pattern_with_mid_pattern_flag(synthetic):
    assert validate(widget(code="x-ABC")) == []
    assert at(validate(widget(code="X-abc")), "spec.code")


def test_synthetic_preserve_unknown_fields_with_properties(synthetic):
    assert validate(widget(extra={"known": "k", "other": {"x": 1}})) == []


def test_synthetic_map_keys_use_defaults(synthetic):
    """protocol defaults to TCP, so {port: 80} and {port: 80, protocol: TCP} collide."""
    errors = validate(widget(ports=[{"port": 80}, {"port": 80, "protocol": "TCP"}]))
    assert errors == ["spec.ports[1]: duplicate entry: port=80, protocol='TCP', same as [0] (x-kubernetes-list-type: map)"]


def test_synthetic_unserved_version(synthetic):
    obj = widget()
    obj["apiVersion"] = "example.com/v0"
    assert "served as example.com/v1" in validate(obj)[0]


def test_missing_crds_dir(tmp_path, monkeypatch):
    """Built-in kinds never need the CRD directory; a custom resource names the override."""
    monkeypatch.setenv(v.CRDS_ENV, str(tmp_path / "nowhere"))
    assert validate(deployment()) == []
    with pytest.raises(FileNotFoundError, match=v.CRDS_ENV):
        validate(cnpg_cluster())


def test_synthetic_registry_can_be_passed_explicitly(synthetic, monkeypatch):
    monkeypatch.delenv(v.CRDS_ENV)
    registry = CrdRegistry(synthetic)
    assert validate(widget(), registry=registry) == []
    assert registry.kinds() == [("example.com/v1", "Widget")]


# --- every real CRD: the rewrites hold for all of them ---------------------------------------------------


@pytest.fixture(scope="module")
def all_compiled():
    registry = v.default_registry()
    registry.load_all()
    return [registry.version(av, kind) for av, kind in registry.kinds()]


def test_every_served_crd_version_is_indexed(all_compiled):
    assert len(all_compiled) == 36  # 32 files; gateway-api serves v1 and v1beta1 of four kinds
    assert len({c.entry.path for c in all_compiled}) == 32


def _walk(node, path=()):
    if isinstance(node, dict):
        yield path, node
        for key in ("properties", "patternProperties"):
            for name, sub in (node.get(key) or {}).items():
                yield from _walk(sub, path + (name,))
        for key in ("items", "additionalProperties", "not"):
            if isinstance(node.get(key), dict):
                yield from _walk(node[key], path + (key,))
        for key in ("allOf", "anyOf", "oneOf"):
            for i, sub in enumerate(node.get(key) or []):
                yield from _walk(sub, path + (f"{key}[{i}]",))


def test_every_crd_pattern_compiles(all_compiled):
    patterns = {node["pattern"] for c in all_compiled for _, node in _walk(c.schema) if "pattern" in node}
    assert len(patterns) > 30
    for pattern in patterns:
        v.compile_re2(pattern)


def test_every_crd_default_is_valid_for_its_own_node(all_compiled):
    """The API server rejects a CRD whose defaults fail its schema; if one fails here, a
    rewrite (additionalProperties: false, nullable, ...) is stricter than the server."""
    failures = []
    for c in all_compiled:
        for path, node in _walk(c.schema):
            if "default" in node:
                value = copy.deepcopy(node["default"])
                v.apply_defaults(value, node)
                errors = list(type(c.validator)(node, format_checker=c.validator.format_checker).iter_errors(value))
                if errors:
                    failures.append((c.api_version, c.entry.kind, path, errors[0].message))
    assert failures == []


# --- YAML as kubectl reads it --------------------------------------------------------------------------


def test_load_manifests_keeps_dates_as_strings():
    docs = v.load_manifests("a: 2024-01-01\nb: =\n---\n---\nc: 1\n")
    assert docs == [{"a": "2024-01-01", "b": "="}, {"c": 1}]


# --- speed: the suite validates a few hundred objects per run ---------------------------------------------


def test_warm_validation_is_fast():
    objs = [deployment(), cnpg_cluster(), gateway(listener("http")), scaled_object(), prometheus_rule()]
    for obj in objs:
        validate(obj)  # compile once
    start = time.perf_counter()
    for _ in range(40):
        for obj in objs:
            validate(obj)
    per_object = (time.perf_counter() - start) / (40 * len(objs))
    assert per_object < 0.02, f"{per_object * 1000:.1f} ms per object"
