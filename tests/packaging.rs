//! Installing certpin the way users do: the Helm chart (lint, template,
//! install, upgrade, uninstall), the plain manifests generated from it, the
//! chart's RBAC being enough (and no more), two replicas with leader
//! election, and the metrics endpoint.

mod support;

use std::process::Command;
use std::time::Duration;

use certpin::resource::ClientCertificateSet;
use kube::Api;
use kube::api::PostParams;
use serde::Deserialize as _;
use support::kube::{TestNamespace, wait_for, wait_until};
use support::operator::*;

const T: Duration = Duration::from_secs(90);
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/certpin");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let mut args = args.to_vec();
    // The chart needs Kubernetes 1.30+ (Chart.yaml's kubeVersion): render it
    // for the oldest it supports. (The test bed's Helm, built without Helm's
    // release stamp, would assume 1.20 and refuse it.)
    if cmd == "helm" && args.first() == Some(&"template") {
        args.push("--kube-version=1.30.0");
    }
    let out = Command::new(cmd)
        .args(&args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (run the tests with scripts/test)"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let (success, out) = run(cmd, args);
    assert!(success, "{cmd} {}: {out}", args.join(" "));
    out
}

#[test]
fn chart_lints_templates_and_the_manifests_are_generated_from_it() {
    ok("helm", &["lint", "--strict", CHART]);
    let all = ok(
        "helm",
        &[
            "template",
            "certpin",
            CHART,
            "--namespace",
            "certpin-system",
        ],
    );
    for kind in [
        "CustomResourceDefinition",
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
    ] {
        assert!(
            all.contains(&format!("kind: {kind}\n")),
            "no {kind} in the chart"
        );
    }
    for hardening in [
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "drop:\n              - ALL",
        "type: RuntimeDefault",
        "livenessProbe:",
        "readinessProbe:",
        "limits:",
    ] {
        assert!(all.contains(hardening), "Deployment lacks {hardening}");
    }
    // Namespaced RBAC when namespaces are listed; no CRD when told.
    let ns = ok(
        "helm",
        &[
            "template",
            "certpin",
            CHART,
            "--set",
            "watchNamespaces={team-a,team-b}",
            "--set",
            "crds.install=false",
        ],
    );
    // certpin's own rights stay in the namespaces. Cluster-wide, only the
    // users' aggregated roles (bound to nobody by the chart) and reading
    // the tenant boundary's two objects by name.
    let docs = yaml_docs(&ns);
    for binding in of_kind(&docs, "ClusterRoleBinding") {
        let role = binding["roleRef"]["name"].as_str().unwrap_or_default();
        let rules = of_kind(&docs, "ClusterRole")
            .into_iter()
            .find(|r| r["metadata"]["name"].as_str() == Some(role))
            .map(|r| yaml_serde::to_string(&r["rules"]).unwrap_or_default())
            .unwrap_or_default();
        assert_eq!(
            rules,
            "- apiGroups:\n  - admissionregistration.k8s.io\n  resources:\n  - validatingadmissionpolicies\n  - validatingadmissionpolicybindings\n  resourceNames:\n  - certpin-default-tenant-boundary\n  verbs:\n  - get\n",
            "cluster-wide RBAC despite watchNamespaces: {role}"
        );
    }
    let bound: Vec<&str> = of_kind(&docs, "ClusterRoleBinding")
        .iter()
        .filter_map(|b| b["roleRef"]["name"].as_str())
        .collect();
    for role in of_kind(&docs, "ClusterRole") {
        let labels = &role["metadata"]["labels"];
        let aggregated = ["admin", "edit", "view"].iter().any(|to| {
            labels[format!("rbac.authorization.k8s.io/aggregate-to-{to}").as_str()].as_str()
                == Some("true")
        });
        let name = role["metadata"]["name"].as_str().unwrap_or_default();
        assert!(
            aggregated || bound.contains(&name),
            "a ClusterRole that is not a user role despite watchNamespaces: {name}"
        );
    }
    // The tenant boundary, bound to the watched namespaces only.
    assert!(ns.contains("kind: ValidatingAdmissionPolicyBinding"));
    assert!(ns.contains(r#"values: ["team-a","team-b"]"#), "{ns}");
    let off = ok(
        "helm",
        &[
            "template",
            "certpin",
            CHART,
            "--set",
            "tenantBoundary.enabled=false",
        ],
    );
    assert!(!off.contains("ValidatingAdmissionPolicy"));
    assert_eq!(
        ns.matches("kind: RoleBinding").count(),
        3,
        "a binding per namespace plus leader election"
    );
    assert!(ns.contains("--namespace=team-a,team-b"));
    assert!(!ns.contains("kind: CustomResourceDefinition"));
    // The values schema refuses nonsense.
    let (accepted, out) = run(
        "helm",
        &["template", "certpin", CHART, "--set", "replicaCount=-1"],
    );
    assert!(!accepted && out.contains("replicaCount"), "{out}");
    let (accepted, _) = run(
        "helm",
        &["template", "certpin", CHART, "--set", "nonsense=1"],
    );
    assert!(!accepted);
    // deploy/ and the chart's CRD are what the generator makes now.
    let (fresh, out) = run(
        concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/gen-manifests"),
        &["--check"],
    );
    assert!(fresh, "{out}");
}

async fn app_ns_with_set(prefix: &str) -> TestNamespace {
    let ns = TestNamespace::new(prefix).await;
    install_crd(&ns.client).await;
    put_secret(
        &ns,
        "partner-a",
        &[
            (
                "certificate.pfx",
                &fixture("pkcs12/openssl-ec256-legacy.p12"),
            ),
            ("password", b"changeit"),
        ],
        None,
    )
    .await;
    create_deployment(&ns, &deployment("shop", 1, &["mendix"])).await;
    ns
}

fn set(name: &str) -> ClientCertificateSet {
    set_for(name, "shop")
}

fn set_for(name: &str, deployment: &str) -> ClientCertificateSet {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
        "metadata": {"name": name},
        "spec": {"app": {"deployment": deployment}, "certificates": [{
            "name": "partner-a", "pkcs12": {"secretName": "partner-a", "key": "certificate.pfx"},
            "password": {"secretName": "partner-a", "key": "password"}, "pinTo": ["api.example.com"]}]}
    }))
    .unwrap()
}

#[tokio::test]
async fn helm_install_and_the_charts_rbac_is_enough_and_no_more() {
    let app = app_ns_with_set("helm-app").await;
    let release_ns = TestNamespace::new("helm-sys").await;
    let rel = release_ns.name.as_str();
    let watch = format!("watchNamespaces={{{}}}", app.name);
    ok(
        "helm",
        &[
            "install",
            "certpin",
            CHART,
            "--namespace",
            rel,
            "--set",
            &watch,
            "--set",
            "crds.install=false",
            "--wait",
            "--timeout",
            "2m",
        ],
    );
    let sa = format!("system:serviceaccount:{rel}:certpin");

    // What the ServiceAccount may not do.
    let other = TestNamespace::new("helm-other").await;
    for (verb, what, ns) in [
        ("get", "secrets", other.name.as_str()),
        ("list", "secrets", other.name.as_str()),
        ("delete", "deployments", app.name.as_str()),
        ("delete", "secrets", app.name.as_str()),
        ("create", "pods", app.name.as_str()),
        ("update", "clusterroles", app.name.as_str()),
        ("get", "leases", app.name.as_str()),
    ] {
        let (allowed, out) = run(
            "kubectl",
            &["auth", "can-i", verb, what, "-n", ns, "--as", &sa],
        );
        assert!(
            !allowed,
            "the chart's ServiceAccount may {verb} {what} in {ns}: {out}"
        );
    }
    for (verb, what, ns) in [
        ("list", "secrets", app.name.as_str()),
        ("patch", "deployments", app.name.as_str()),
        ("create", "leases", rel),
    ] {
        let (allowed, out) = run(
            "kubectl",
            &["auth", "can-i", verb, what, "-n", ns, "--as", &sa],
        );
        assert!(
            allowed,
            "the chart's ServiceAccount may not {verb} {what} in {ns}: {out}"
        );
    }

    // The operator, as that ServiceAccount, reconciles a set end to end.
    let as_flag = format!("--impersonate={sa}");
    let _op = Operator::start_with(
        &app.name,
        "-helm",
        &[
            &as_flag,
            "--lease-name",
            "certpin",
            "--lease-namespace",
            rel,
        ],
    );
    let sets: Api<ClientCertificateSet> = app.api();
    sets.create(&PostParams::default(), &set("prod"))
        .await
        .unwrap();
    wait_until(
        &sets,
        "prod",
        T,
        "Ready as the chart's ServiceAccount",
        ready,
    )
    .await;

    ok(
        "helm",
        &[
            "upgrade",
            "certpin",
            CHART,
            "--namespace",
            rel,
            "--set",
            &watch,
            "--set",
            "crds.install=false",
            "--set",
            "replicaCount=1",
            "--wait",
            "--timeout",
            "2m",
        ],
    );
    let replicas = ok(
        "kubectl",
        &[
            "-n",
            rel,
            "get",
            "deployment",
            "certpin",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
    );
    assert_eq!(replicas.trim(), "1");
    ok(
        "helm",
        &["uninstall", "certpin", "--namespace", rel, "--wait"],
    );
    let (exists, _) = run("kubectl", &["-n", rel, "get", "deployment", "certpin"]);
    assert!(!exists, "uninstall left the Deployment");
    let (exists, _) = run(
        "kubectl",
        &["-n", &app.name, "get", "rolebinding", "certpin"],
    );
    assert!(!exists, "uninstall left the RoleBinding");
}

#[tokio::test]
async fn two_replicas_one_leader_and_failover_finishes_pending_work() {
    let ns = app_ns_with_set("leader").await;
    let lease = ["--lease-name", "certpin-ha"];
    let mut a = Operator::start_with(&ns.name, "-a", &lease);
    let mut b = Operator::start_with(&ns.name, "-b", &lease);
    let sets: Api<ClientCertificateSet> = ns.api();
    sets.create(&PostParams::default(), &set("first"))
        .await
        .unwrap();
    wait_until(&sets, "first", T, "Ready", ready).await;
    let leads = |o: &Operator| o.log_text().contains("became the leader");
    assert!(leads(&a) ^ leads(&b), "exactly one replica leads");
    let (leader, standby) = if leads(&a) {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert!(standby.log_text().contains("waiting to become the leader"));
    assert_eq!(standby.reconciles("first"), 0, "the standby reconciled");
    // Which replica acts, as Prometheus sees it.
    let leads_gauge = |o: &Operator| {
        http_get(&o.metrics_url())
            .lines()
            .find(|l| l.starts_with("certpin_leader "))
            .map(str::to_string)
    };
    assert_eq!(leads_gauge(leader).as_deref(), Some("certpin_leader 1"));
    assert_eq!(leads_gauge(standby).as_deref(), Some("certpin_leader 0"));

    // The leader dies (SIGKILL: no release); work arrives meanwhile.
    leader.kill();
    create_deployment(&ns, &deployment("shop2", 1, &["mendix"])).await;
    sets.create(&PostParams::default(), &set_for("second", "shop2"))
        .await
        .unwrap();
    wait_until(
        &sets,
        "second",
        Duration::from_secs(60),
        "Ready after failover",
        ready,
    )
    .await;
    assert!(standby.log_text().contains("became the leader"));
    assert_eq!(leads_gauge(standby).as_deref(), Some("certpin_leader 1"));
    // The pass logs after its status write lands: wait for the line.
    wait_for(
        Duration::from_secs(10),
        "the standby's pass on the new set",
        || {
            let n = standby.reconciles("second");
            async move { n >= 1 }
        },
    )
    .await;
}

#[tokio::test]
async fn metrics_expose_the_exact_expiry_of_a_known_certificate() {
    let ns = app_ns_with_set("metrics").await;
    let op = Operator::start(&ns.name);
    let sets: Api<ClientCertificateSet> = ns.api();
    sets.create(&PostParams::default(), &set("prod"))
        .await
        .unwrap();
    wait_until(&sets, "prod", T, "Ready", ready).await;
    let not_after =
        certpin::pkcs12::decode_pkcs12(&fixture("pkcs12/openssl-ec256-legacy.p12"), "changeit")
            .unwrap()
            .facts
            .not_after
            .timestamp();
    let line = format!(
        "certpin_certificate_not_after_timestamp_seconds{{namespace=\"{}\",set=\"prod\",certificate=\"partner-a\"}} {not_after}",
        ns.name
    );
    let url = op.metrics_url();
    wait_for(T, "the expiry gauge", || {
        let body = http_get(&url);
        let found = body.lines().any(|l| l == line);
        async move { found }
    })
    .await;
    let body = http_get(&url);
    assert!(
        body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
        "{body}"
    );
    for metric in [
        "certpin_reconciliations_total{result=\"ok\"}",
        "certpin_reconcile_duration_seconds_bucket",
        "certpin_pkcs12_decodes_total",
    ] {
        assert!(body.contains(metric), "no {metric} in:\n{body}");
    }
    let build = format!(
        "certpin_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(body.lines().any(|l| l == build), "no {build} in:\n{body}");
    assert!(!body.contains("changeit"));
    let health = http_get(&url.replace("/metrics", "/healthz"));
    assert!(health.contains(" 200 "), "{health}");
    let ready = http_get(&url.replace("/metrics", "/readyz"));
    assert!(ready.contains(" 200 "), "{ready}");
}

/// The YAML documents `helm template` prints, with the given `--set`s.
fn template(sets: &[&str]) -> (bool, Vec<yaml_serde::Value>, String) {
    let mut args = vec![
        "template",
        "certpin",
        CHART,
        "--namespace",
        "certpin-system",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    let (success, out) = run("helm", &args);
    let docs = if success { yaml_docs(&out) } else { Vec::new() };
    (success, docs, out)
}

fn yaml_docs(out: &str) -> Vec<yaml_serde::Value> {
    yaml_serde::Deserializer::from_str(out)
        .filter_map(|d| yaml_serde::Value::deserialize(d).ok())
        .filter(|d| !d.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [yaml_serde::Value], kind: &str) -> Vec<&'a yaml_serde::Value> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

fn pod_spec(docs: &[yaml_serde::Value]) -> &yaml_serde::Value {
    &of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
}

#[test]
fn chart_defaults_spread_the_replicas_and_bound_disruptions() {
    let (success, docs, out) = template(&[]);
    assert!(success, "{out}");
    let pdb = of_kind(&docs, "PodDisruptionBudget");
    assert_eq!(pdb.len(), 1, "{out}");
    assert_eq!(pdb[0]["spec"]["maxUnavailable"], yaml_serde::Value::from(1));
    let spec = pod_spec(&docs);
    let spread = &spec["topologySpreadConstraints"][0];
    assert_eq!(
        spread["topologyKey"].as_str(),
        Some("kubernetes.io/hostname")
    );
    assert_eq!(spread["whenUnsatisfiable"].as_str(), Some("ScheduleAnyway"));
    assert_eq!(
        spec["securityContext"]["runAsUser"],
        yaml_serde::Value::from(65532)
    );
    let image = spec["containers"][0]["image"].as_str().unwrap_or_default();
    assert!(image.starts_with("ghcr.io/certpin/certpin:"), "{image}");
    assert!(of_kind(&docs, "NetworkPolicy").is_empty());
    let roles: Vec<&str> = of_kind(&docs, "ClusterRole")
        .iter()
        .filter_map(|r| r["metadata"]["name"].as_str())
        .collect();
    assert!(roles.contains(&"certpin-certpin-system-view"), "{roles:?}");
    assert!(roles.contains(&"certpin-certpin-system-edit"), "{roles:?}");
    // One replica: a PDB would block every drain.
    let (_, docs, _) = template(&["replicaCount=1"]);
    assert!(of_kind(&docs, "PodDisruptionBudget").is_empty());
    let (_, docs, _) = template(&["userRoles.aggregate=false"]);
    assert_eq!(of_kind(&docs, "ClusterRole").len(), 1, "only certpin's own");
}

#[test]
fn chart_values_for_platforms_render_what_they_promise() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let (success, docs, out) = template(&[
        "global.imageRegistry=mirror.example:5000",
        "global.someOtherChartsValue=x",
        &format!("image.digest={digest}"),
        "extraArgs={--debounce-ms=2000,--resync-seconds=1800}",
        "extraEnv[0].name=HTTPS_PROXY",
        "extraEnv[0].value=http://proxy:3128",
        "extraVolumes[0].name=ca",
        "extraVolumes[0].configMap.name=corp-ca",
        "extraVolumeMounts[0].name=ca",
        "extraVolumeMounts[0].mountPath=/etc/ssl/corp",
        "podSecurityContext.runAsUser=null",
        "podSecurityContext.runAsGroup=null",
        "networkPolicy.enabled=true",
        "networkPolicy.apiServer.cidrs={10.0.0.1/32}",
        "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring",
        "commonLabels.team=platform",
        "metrics.serviceMonitor.enabled=true",
    ]);
    assert!(success, "{out}");
    let spec = pod_spec(&docs);
    let c = &spec["containers"][0];
    assert_eq!(
        c["image"].as_str(),
        Some(format!("mirror.example:5000/certpin/certpin@{digest}").as_str())
    );
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(
        args.ends_with(&["--debounce-ms=2000", "--resync-seconds=1800"]),
        "{args:?}"
    );
    assert!(out.contains("name: HTTPS_PROXY"), "{out}");
    assert_eq!(
        c["volumeMounts"][0]["mountPath"].as_str(),
        Some("/etc/ssl/corp")
    );
    assert_eq!(
        spec["volumes"][0]["configMap"]["name"].as_str(),
        Some("corp-ca")
    );
    // OpenShift: the platform picks the user; the rest of the context stays.
    let psc = &spec["securityContext"];
    assert!(
        psc["runAsUser"].is_null() && psc["runAsGroup"].is_null(),
        "{psc:?}"
    );
    assert_eq!(psc["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        c["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    let np = of_kind(&docs, "NetworkPolicy");
    assert_eq!(np.len(), 1, "{out}");
    let np = &np[0]["spec"];
    assert_eq!(
        np["egress"][0]["to"][0]["ipBlock"]["cidr"].as_str(),
        Some("10.0.0.1/32")
    );
    assert_eq!(
        np["ingress"][0]["ports"][0]["port"].as_str(),
        Some("metrics")
    );
    assert_eq!(
        np["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["name"].as_str(),
        Some("monitoring")
    );
    for d in &docs {
        assert_eq!(
            d["metadata"]["labels"]["team"].as_str(),
            Some("platform"),
            "{:?} lacks commonLabels",
            d["kind"]
        );
    }
    let sm = of_kind(&docs, "ServiceMonitor");
    assert_eq!(
        sm[0]["spec"]["endpoints"][0]["honorLabels"].as_bool(),
        Some(true)
    );
    // The schema stays strict about everything else.
    for bad in [
        "unknownValue=1",
        "extraArgs={debounce}",
        "image.digest=latest",
        "networkPolicy.egress=x",
    ] {
        let (success, _, out) = template(&[bad]);
        assert!(!success, "{bad} was accepted: {out}");
    }
}

#[tokio::test]
async fn the_chart_installs_as_a_subchart_and_namespace_users_get_sets_through_built_in_roles() {
    let app = TestNamespace::new("umbrella-app").await;
    let rel = TestNamespace::new("umbrella-sys").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Chart.yaml"),
        format!(
            "apiVersion: v2\nname: platform\nversion: 1.0.0\ndependencies:\n  - name: certpin\n    version: \">=0.0.0\"\n    repository: file://{CHART}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("values.yaml"),
        format!(
            "global:\n  imageRegistry: mirror.example\n  team: platform\ncertpin:\n  crds:\n    install: false\n  watchNamespaces: [{}]\n  replicaCount: 1\n",
            app.name
        ),
    )
    .unwrap();
    let umbrella = dir.path().to_str().unwrap();
    ok("helm", &["dependency", "build", umbrella]);
    ok(
        "helm",
        &["install", "platform", umbrella, "--namespace", &rel.name],
    );
    let deployment = ok(
        "kubectl",
        &[
            "get",
            "deployment",
            "platform-certpin",
            "-n",
            &rel.name,
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ],
    );
    assert!(
        deployment.starts_with("mirror.example/certpin/certpin:"),
        "{deployment}"
    );

    // Built-in roles, plain RoleBindings: an editor and a viewer.
    for (user, role) in [("umbrella-editor", "edit"), ("umbrella-viewer", "view")] {
        ok(
            "kubectl",
            &[
                "create",
                "rolebinding",
                user,
                "--clusterrole",
                role,
                "--user",
                user,
                "-n",
                &app.name,
            ],
        );
    }
    let can = |user: &'static str, verb: &'static str, what: &'static str| {
        let ns = app.name.clone();
        async move {
            run(
                "kubectl",
                &["auth", "can-i", verb, what, "-n", &ns, "--as", user],
            )
            .0
        }
    };
    // The aggregation controller folds the roles in shortly after install.
    wait_for(T, "edit to include clientcertificatesets", || {
        can(
            "umbrella-editor",
            "create",
            "clientcertificatesets.certpin.dev",
        )
    })
    .await;
    for verb in [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ] {
        assert!(
            can("umbrella-editor", verb, "clientcertificatesets.certpin.dev").await,
            "editor may not {verb}"
        );
    }
    for verb in ["get", "list", "watch"] {
        assert!(
            can("umbrella-viewer", verb, "clientcertificatesets.certpin.dev").await,
            "viewer may not {verb}"
        );
    }
    for verb in ["create", "update", "patch", "delete"] {
        assert!(
            !can("umbrella-viewer", verb, "clientcertificatesets.certpin.dev").await,
            "viewer may {verb}"
        );
    }
    // Status is certpin's to write, not a user's.
    for user in ["umbrella-editor", "umbrella-viewer"] {
        let (allowed, out) = run(
            "kubectl",
            &[
                "auth",
                "can-i",
                "patch",
                "clientcertificatesets.certpin.dev",
                "--subresource",
                "status",
                "-n",
                &app.name,
                "--as",
                user,
            ],
        );
        assert!(!allowed, "{user} may patch the status: {out}");
    }
    ok("helm", &["uninstall", "platform", "--namespace", &rel.name]);
}

/// The chart's alert rules pass their promtool cases
/// (`tests/prometheus/rules_test.yaml`), including "an expired CA in a
/// bundle does not fire the critical alert"; every rule has a case where it
/// fires, is named `Certpin...`, and links a runbook that the README has.
#[test]
fn alert_rules_pass_their_promtool_tests_and_link_their_runbooks() {
    let (found, version) = run_opt("promtool", &["--version"]);
    assert!(
        found,
        "promtool is not on PATH: eval \"$(scripts/testbed env)\" (scripts/testbed builds it){version}"
    );
    let (success, docs, out) = template(&["metrics.prometheusRule.enabled=true"]);
    assert!(success, "{out}");
    let rule = of_kind(&docs, "PrometheusRule");
    assert_eq!(rule.len(), 1, "{out}");
    let groups = &rule[0]["spec"]["groups"];
    let dir = tempfile::tempdir().unwrap();
    let mut file = yaml_serde::Mapping::new();
    file.insert("groups".into(), groups.clone());
    std::fs::write(
        dir.path().join("rules.yaml"),
        yaml_serde::to_string(&file).unwrap(),
    )
    .unwrap();
    let cases =
        std::fs::read_to_string(format!("{ROOT}/tests/prometheus/rules_test.yaml")).unwrap();
    std::fs::write(dir.path().join("rules_test.yaml"), &cases).unwrap();
    let out = Command::new("promtool")
        .args(["test", "rules", "rules_test.yaml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Alerts with a case where they fire, and their severities.
    let cases: yaml_serde::Value = yaml_serde::from_str(&cases).unwrap();
    let fired: Vec<(String, String)> = cases["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().unwrap())
        .flat_map(|a| {
            let name = a["alertname"].as_str().unwrap().to_string();
            a["exp_alerts"].as_sequence().unwrap().iter().map(move |e| {
                let severity = e["exp_labels"]["severity"].as_str().unwrap().to_string();
                (name.clone(), severity)
            })
        })
        .collect();
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).unwrap();
    let anchors: Vec<String> = readme
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            // GitHub's heading anchors: lower case, spaces to '-', other
            // punctuation dropped.
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let rules = groups[0]["rules"].as_sequence().unwrap();
    let mut severities = Vec::new();
    for r in rules {
        let alert = r["alert"].as_str().unwrap();
        let severity = r["labels"]["severity"].as_str().unwrap();
        assert!(alert.starts_with("Certpin"), "{alert}");
        assert!(
            fired.contains(&(alert.to_string(), severity.to_string())),
            "{alert}: no case in tests/prometheus/rules_test.yaml where it fires"
        );
        let url = r["annotations"]["runbook_url"].as_str().unwrap();
        let (page, anchor) = url.split_once('#').unwrap();
        assert_eq!(
            page,
            "https://github.com/certpin/certpin/blob/main/README.md"
        );
        assert_eq!(anchor, alert.to_lowercase());
        assert!(
            anchors.iter().any(|a| a == anchor),
            "{alert}: the README has no heading #{anchor}"
        );
        severities.push((alert, severity));
    }
    // An expired or expiring CA only warns; an expired client certificate pages.
    assert_eq!(
        severities,
        [
            ("CertpinClientCertificateExpiringSoon", "warning"),
            ("CertpinClientCertificateExpired", "critical"),
            ("CertpinCACertificateExpiringSoon", "warning"),
            ("CertpinCACertificateExpired", "warning"),
            ("CertpinClientCertificateSetNotReady", "warning"),
        ]
    );
}

/// Like `run`, but a missing command is `false`, not a panic.
fn run_opt(cmd: &str, args: &[&str]) -> (bool, String) {
    match Command::new(cmd).args(args).output() {
        Ok(out) => (out.status.success(), String::new()),
        Err(e) => (false, format!(" ({e})")),
    }
}

/// One version everywhere a release names it: Cargo's, the chart's
/// `version` and `appVersion`, the image the chart runs by default and the
/// one Artifact Hub lists.
#[test]
fn the_cargo_version_chart_version_app_version_and_image_tag_agree() {
    let cargo = env!("CARGO_PKG_VERSION");
    let chart: yaml_serde::Value =
        yaml_serde::from_str(&std::fs::read_to_string(format!("{CHART}/Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(chart["version"].as_str(), Some(cargo));
    assert_eq!(chart["appVersion"].as_str(), Some(cargo));
    let (success, docs, out) = template(&[]);
    assert!(success, "{out}");
    let image = pod_spec(&docs)["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(image, format!("ghcr.io/certpin/certpin:{cargo}"));
    let listed: yaml_serde::Value = yaml_serde::from_str(
        chart["annotations"]["artifacthub.io/images"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(listed[0]["image"].as_str(), Some(image.as_str()));
    // The image's own version label.
    let dockerfile = std::fs::read_to_string(format!("{ROOT}/Dockerfile")).unwrap();
    assert!(
        dockerfile
            .lines()
            .any(|l| l == format!("ARG VERSION={cargo}")),
        "the Dockerfile's ARG VERSION is not {cargo}"
    );
}

/// examples/app.yaml runs images a stranger can pull: the example app the
/// release builds (images/example-app/Dockerfile) at the chart's version,
/// and nginx for the partners; scripts/images gives the real node's
/// stand-ins those names.
#[test]
fn the_example_app_is_the_image_the_release_builds() {
    let cargo = env!("CARGO_PKG_VERSION");
    let want = format!("ghcr.io/certpin/certpin-example-app:{cargo}");
    let read = |p: &str| std::fs::read_to_string(format!("{ROOT}/{p}")).unwrap();
    let text = read("examples/app.yaml");
    let app: yaml_serde::Value = text
        .split("\n---\n")
        .map(|d| yaml_serde::from_str::<yaml_serde::Value>(d).unwrap())
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .unwrap();
    let containers = app["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    let image = |name: &str| {
        let c = containers
            .iter()
            .find(|c| c["name"].as_str() == Some(name))
            .unwrap();
        assert_eq!(c["imagePullPolicy"].as_str(), Some("IfNotPresent"));
        c["image"].as_str().unwrap().to_string()
    };
    assert_eq!(image("mendix"), want);
    let partner = image("partners");
    let images = read("scripts/images");
    assert!(
        images.contains(&format!("PARTNER_TAG=\"docker.io/{partner}\"")),
        "scripts/images does not name the partners' stand-in {partner}"
    );
    let release: yaml_serde::Value =
        yaml_serde::from_str(&read(".github/workflows/release.yml")).unwrap();
    assert_eq!(
        release["env"]["EXAMPLE_APP_IMAGE"].as_str(),
        Some("ghcr.io/${{ github.repository }}-example-app")
    );
    let steps = release["jobs"]["example-app"]["steps"]
        .as_sequence()
        .unwrap();
    let build = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("docker/build-push-action@"))
        })
        .expect("the example-app job builds with docker/build-push-action");
    assert_eq!(
        build["with"]["file"].as_str(),
        Some("images/example-app/Dockerfile")
    );
    assert_eq!(
        build["with"]["context"].as_str(),
        Some("tests/realnode/app")
    );
    assert_eq!(
        build["with"]["tags"].as_str(),
        Some("${{ env.EXAMPLE_APP_IMAGE }}:${{ needs.version.outputs.version }}")
    );
    let dockerfile = read("images/example-app/Dockerfile");
    assert!(
        dockerfile
            .lines()
            .any(|l| l == format!("ARG VERSION={cargo}")),
        "images/example-app/Dockerfile's ARG VERSION is not {cargo}"
    );
    assert!(dockerfile.contains("FROM eclipse-temurin:17-jre"));
    assert!(
        images.contains("EXAMPLE_APP_TAG=\"ghcr.io/certpin/certpin-example-app:$APP_VERSION\""),
        "scripts/images does not name the stand-in as examples/app.yaml does"
    );
}

/// Chart users' usual knobs: names, namespace, and a PodMonitor.
#[test]
fn chart_names_namespace_and_pod_monitor_follow_their_values() {
    let name = |docs: &[yaml_serde::Value], kind: &str| {
        of_kind(docs, kind)[0]["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (success, docs, out) = template(&["nameOverride=mtls"]);
    assert!(success, "{out}");
    assert_eq!(name(&docs, "Deployment"), "certpin-mtls");
    let labels = &of_kind(&docs, "Deployment")[0]["spec"]["selector"]["matchLabels"];
    assert_eq!(labels["app.kubernetes.io/name"].as_str(), Some("mtls"));
    let (success, docs, out) = template(&["fullnameOverride=mine"]);
    assert!(success, "{out}");
    assert_eq!(name(&docs, "Deployment"), "mine");
    assert_eq!(name(&docs, "ServiceAccount"), "mine");

    let (success, docs, out) = template(&[
        "namespaceOverride=elsewhere",
        "metrics.podMonitor.enabled=true",
        "metrics.serviceMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
    ]);
    assert!(success, "{out}");
    for d in &docs {
        let kind = d["kind"].as_str().unwrap();
        let cluster_wide = kind.starts_with("Cluster")
            || kind.starts_with("ValidatingAdmissionPolicy")
            || kind == "CustomResourceDefinition";
        if !cluster_wide {
            assert_eq!(
                d["metadata"]["namespace"].as_str(),
                Some("elsewhere"),
                "{kind} {}",
                d["metadata"]["name"].as_str().unwrap_or_default()
            );
        }
    }
    let binding = of_kind(&docs, "ClusterRoleBinding");
    assert!(
        binding
            .iter()
            .all(|b| b["subjects"][0]["namespace"].as_str() == Some("elsewhere")),
        "{out}"
    );
    let pod_monitor = of_kind(&docs, "PodMonitor");
    assert_eq!(pod_monitor.len(), 1, "{out}");
    let pod_labels = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["metadata"]["labels"];
    for (k, v) in pod_monitor[0]["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap()
    {
        assert_eq!(&pod_labels[k], v, "the PodMonitor selects certpin's pods");
    }
    let endpoint = &pod_monitor[0]["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"].as_str(), Some("metrics"));
    assert_eq!(endpoint["honorLabels"].as_bool(), Some(true));
    let (success, docs, _) = template(&[]);
    assert!(success);
    assert!(of_kind(&docs, "PodMonitor").is_empty());
}

/// charts/certpin/README.md is what scripts/gen-chart-readme makes from
/// values.yaml now, and lists every top-level value.
#[test]
fn the_chart_readme_is_generated_from_the_current_values() {
    let (fresh, out) = run(&format!("{ROOT}/scripts/gen-chart-readme"), &["--check"]);
    assert!(fresh, "{out}");
    let readme = std::fs::read_to_string(format!("{CHART}/README.md")).unwrap();
    let values: yaml_serde::Value =
        yaml_serde::from_str(&std::fs::read_to_string(format!("{CHART}/values.yaml")).unwrap())
            .unwrap();
    for key in values.as_mapping().unwrap().keys() {
        let key = key.as_str().unwrap();
        assert!(
            readme.contains(&format!("| `{key}` |")) || readme.contains(&format!("| `{key}.")),
            "{key} is not in the chart README"
        );
    }
    assert!(readme.contains("-f values.yaml"));
    assert!(
        !readme.contains(
            "helm upgrade certpin charts/certpin --namespace certpin-system --reuse-values"
        )
    );
}

/// The GitHub workflows pass actionlint (installed and cached by
/// scripts/actionlint from the Go module proxy).
#[test]
fn the_workflows_pass_actionlint() {
    let out = ok(&format!("{ROOT}/scripts/actionlint"), &[]);
    assert!(!out.contains("error"), "{out}");
}

/// The chart's default memory follows the sizing guide: the limit is at
/// least 1.5× the peak bench/results.json measured at 5,000 sets, the
/// request at least the steady state at 1,000, and docs/performance.md
/// states both.
#[test]
fn the_default_memory_covers_the_sizing_guides_scale() {
    let read = |path: &str| std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap();
    let values: yaml_serde::Value =
        yaml_serde::from_str(&read("charts/certpin/values.yaml")).unwrap();
    let mib = |v: &yaml_serde::Value| -> f64 {
        v.as_str()
            .and_then(|s| s.strip_suffix("Mi"))
            .unwrap()
            .parse()
            .unwrap()
    };
    let request = mib(&values["resources"]["requests"]["memory"]);
    let limit = mib(&values["resources"]["limits"]["memory"]);
    let results: serde_json::Value = serde_json::from_str(&read("bench/results.json")).unwrap();
    let measured = |n: u64, figure: &str| -> f64 {
        let size = results["sizes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["n"] == n && s["replicas"] == 0)
            .unwrap_or_else(|| panic!("no N = {n} in bench/results.json"));
        size[figure]["peak"].as_f64().unwrap() / (1024.0 * 1024.0)
    };
    let peak = measured(5000, "certpin_memory_convergence");
    assert!(
        limit >= 1.5 * peak,
        "limit {limit}Mi, peak at 5,000 sets {peak:.1} MiB"
    );
    let steady = measured(1000, "certpin_memory_steady");
    assert!(
        request >= steady,
        "request {request}Mi, steady at 1,000 sets {steady:.1} MiB"
    );
    assert!(
        read("docs/performance.md").contains(&format!("{request}Mi / {limit}Mi (chart default)")),
        "docs/performance.md does not give the chart's default {request}Mi / {limit}Mi"
    );
}
