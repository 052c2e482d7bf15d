//! Whether the tenant boundary is in force: the chart's
//! ValidatingAdmissionPolicy (a set may make certpin do only what its
//! author may do) and its binding. Nothing in certpin itself enforces it:
//! without the policy, a user who may write sets can make certpin patch any
//! workload and read any Secret of the namespace. So certpin reads both at
//! start and every few minutes, checks that they would stop a set's write
//! in every namespace it watches, logs a warning when not, and exports
//! `certpin_tenant_boundary_installed`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use k8s_openapi::api::admissionregistration::v1::{
    MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{Api, Client};
use tracing::{info, warn};

use super::metrics::Metrics;

#[derive(Args, Debug, Clone)]
pub struct BoundaryArgs {
    /// The tenant boundary's ValidatingAdmissionPolicy (the chart passes
    /// its own): certpin checks that it is installed and bound, and says so
    /// in its log and in `certpin_tenant_boundary_installed`.
    #[arg(long = "tenant-boundary", env = "CERTPIN_TENANT_BOUNDARY")]
    pub policy: Option<String>,
    /// Its ValidatingAdmissionPolicyBinding (default: the policy's name).
    #[arg(
        long = "tenant-boundary-binding",
        env = "CERTPIN_TENANT_BOUNDARY_BINDING"
    )]
    pub binding: Option<String>,
    /// How often the boundary is checked again (seconds).
    #[arg(long = "tenant-boundary-check-seconds", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub check_seconds: u64,
}

/// What certpin found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Installed,
    /// No `--tenant-boundary`: certpin was not told which policy to look for.
    NotConfigured,
    PolicyMissing,
    BindingMissing,
    /// Installed, but it would let some set's writes through: why.
    NotMatching(Vec<String>),
    /// certpin could not read it (e.g. not allowed to): why.
    Unreadable(String),
}

impl Verdict {
    /// The `state` label of the gauge.
    pub fn state(&self) -> &'static str {
        match self {
            Verdict::Installed => "installed",
            Verdict::NotConfigured => "not-configured",
            Verdict::PolicyMissing => "policy-missing",
            Verdict::BindingMissing => "binding-missing",
            Verdict::NotMatching(_) => "not-matching",
            Verdict::Unreadable(_) => "unreadable",
        }
    }
}

const GROUP: &str = "certpin.dev";
const RESOURCE: &str = "clientcertificatesets";
const OPERATIONS: [&str; 3] = ["CREATE", "UPDATE", "DELETE"];
/// The label the API server puts on every namespace: the only one certpin
/// can evaluate a namespaceSelector on without reading namespaces.
const NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";

/// Starts checking the boundary now and every `--tenant-boundary-check-seconds`.
pub fn spawn(client: Client, metrics: Arc<Metrics>, args: &BoundaryArgs, namespaces: &[String]) {
    let (args, namespaces) = (args.clone(), namespaces.to_vec());
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let verdict = check(&client, &args, &namespaces).await;
            metrics.set_tenant_boundary(verdict.state(), verdict == Verdict::Installed);
            if last.as_ref() != Some(&verdict) {
                report(&args, &verdict);
                last = Some(verdict);
            }
            tokio::time::sleep(Duration::from_secs(args.check_seconds)).await;
        }
    });
}

fn report(args: &BoundaryArgs, verdict: &Verdict) {
    let policy = args.policy.as_deref().unwrap_or_default();
    let binding = args.binding.as_deref().unwrap_or(policy);
    let without = "without it, a user who may write ClientCertificateSets can make certpin patch and restart any Deployment or StatefulSet and read any Secret of the namespace (README: Security notes)";
    match verdict {
        Verdict::Installed => {
            info!(
                policy,
                binding, "the tenant boundary is installed and bound"
            )
        }
        Verdict::NotConfigured => {
            warn!("the tenant boundary is not checked (no --tenant-boundary); {without}")
        }
        Verdict::PolicyMissing => warn!(
            policy,
            "the tenant boundary's ValidatingAdmissionPolicy is not installed; {without}"
        ),
        Verdict::BindingMissing => warn!(
            policy,
            binding,
            "the tenant boundary's ValidatingAdmissionPolicyBinding is not installed; {without}"
        ),
        Verdict::NotMatching(why) => warn!(
            policy,
            binding,
            why = why.join("; "),
            "the tenant boundary is installed but does not cover every write of a set that certpin acts on; {without}"
        ),
        Verdict::Unreadable(why) => warn!(
            policy,
            binding,
            error = why.as_str(),
            "cannot tell whether the tenant boundary is installed"
        ),
    }
}

/// Reads the policy and its binding and judges them.
pub async fn check(client: &Client, args: &BoundaryArgs, namespaces: &[String]) -> Verdict {
    let Some(policy_name) = args.policy.as_deref() else {
        return Verdict::NotConfigured;
    };
    let binding_name = args.binding.as_deref().unwrap_or(policy_name);
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    let unreadable = |what: &str, name: &str, e: kube::Error| {
        Verdict::Unreadable(format!(
            "reading {what} {name}: {e} (certpin needs get on it: the chart grants it)"
        ))
    };
    let policy = match policies.get_opt(policy_name).await {
        Ok(p) => p,
        Err(e) => return unreadable("validatingadmissionpolicies", policy_name, e),
    };
    let binding = match bindings.get_opt(binding_name).await {
        Ok(b) => b,
        Err(e) => return unreadable("validatingadmissionpolicybindings", binding_name, e),
    };
    judge(policy_name, policy.as_ref(), binding.as_ref(), namespaces)
}

/// Whether `policy`, bound by `binding`, checks every create, update and
/// delete of a set in the `namespaces` certpin watches (empty: all).
pub fn judge(
    policy_name: &str,
    policy: Option<&ValidatingAdmissionPolicy>,
    binding: Option<&ValidatingAdmissionPolicyBinding>,
    namespaces: &[String],
) -> Verdict {
    let Some(policy) = policy else {
        return Verdict::PolicyMissing;
    };
    let Some(binding) = binding else {
        return Verdict::BindingMissing;
    };
    let mut why = Vec::new();
    let spec = policy.spec.clone().unwrap_or_default();
    if spec.failure_policy.as_deref().is_some_and(|f| f != "Fail") {
        why.push(
            "the policy's failurePolicy is not Fail: a check that fails lets the write through"
                .to_string(),
        );
    }
    if spec.validations.as_ref().is_none_or(Vec::is_empty) {
        why.push("the policy has no validations".into());
    }
    match spec.match_constraints.as_ref() {
        Some(m) => why.extend(uncovered(
            "the policy's matchConstraints",
            m,
            true,
            namespaces,
        )),
        None => why.push("the policy has no matchConstraints".into()),
    }
    let bspec = &binding.spec;
    if bspec.policy_name != policy_name {
        why.push(format!(
            "the binding binds policy {:?}, not {policy_name:?}",
            bspec.policy_name
        ));
    }
    if !bspec.validation_actions.iter().any(|a| a == "Deny") {
        why.push(format!(
            "the binding's validationActions {:?} do not include Deny: failed checks are only reported",
            bspec.validation_actions
        ));
    }
    if let Some(m) = bspec.match_resources.as_ref() {
        why.extend(uncovered(
            "the binding's matchResources",
            m,
            false,
            namespaces,
        ));
    }
    if why.is_empty() {
        Verdict::Installed
    } else {
        Verdict::NotMatching(why)
    }
}

/// What of sets' writes in `namespaces` `m` leaves out. A policy's
/// matchConstraints must name sets; a binding's matchResources narrows
/// them only when it has resourceRules.
fn uncovered(
    what: &str,
    m: &MatchResources,
    must_name: bool,
    namespaces: &[String],
) -> Vec<String> {
    let mut why = Vec::new();
    let rules = m.resource_rules.as_deref().unwrap_or_default();
    if must_name || !rules.is_empty() {
        let missing: Vec<&str> = OPERATIONS
            .into_iter()
            .filter(|op| !rules.iter().any(|r| rule_covers(r, op)))
            .collect();
        if !missing.is_empty() {
            why.push(format!(
                "{what} do not match {} of {RESOURCE}.{GROUP}",
                missing.join(", ")
            ));
        }
    }
    let excluded: Vec<&str> = OPERATIONS
        .into_iter()
        .filter(|op| {
            m.exclude_resource_rules
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|r| rule_covers(r, op))
        })
        .collect();
    if !excluded.is_empty() {
        why.push(format!(
            "{what} exclude {} of {RESOURCE}.{GROUP}",
            excluded.join(", ")
        ));
    }
    if m.object_selector.as_ref().is_some_and(|s| !selects_all(s)) {
        // The labels are the set's, which its author writes.
        why.push(format!(
            "{what} have an objectSelector: a set's author can label the set out of it"
        ));
    }
    if let Some(s) = m.namespace_selector.as_ref().filter(|s| !selects_all(s)) {
        if namespaces.is_empty() {
            why.push(format!(
                "{what} select namespaces, and certpin watches all of them"
            ));
        }
        for ns in namespaces {
            match selects_namespace(s, ns) {
                Some(true) => {}
                Some(false) => why.push(format!("{what} leave out namespace {ns}")),
                None => why.push(format!(
                    "{what} select namespaces by labels other than {NAMESPACE_NAME}, which certpin cannot see: cannot tell whether they cover {ns}"
                )),
            }
        }
    }
    why
}

/// Whether the rule matches `op` on every set (all versions, no names).
fn rule_covers(r: &NamedRuleWithOperations, op: &str) -> bool {
    let has = |list: &Option<Vec<String>>, want: &[&str]| {
        list.as_deref()
            .unwrap_or_default()
            .iter()
            .any(|v| want.contains(&v.as_str()))
    };
    has(&r.api_groups, &[GROUP, "*"])
        && has(&r.api_versions, &["*", "v1alpha1"])
        && has(&r.resources, &[RESOURCE, "*", "*/*"])
        && has(&r.operations, &[op, "*"])
        && r.resource_names.as_deref().is_none_or(<[String]>::is_empty)
        && r.scope
            .as_deref()
            .is_none_or(|s| s == "*" || s == "Namespaced")
}

fn selects_all(s: &LabelSelector) -> bool {
    s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

/// Whether the selector selects namespace `ns`, judged by its name label
/// alone; `None` when it asks about other labels.
fn selects_namespace(s: &LabelSelector, ns: &str) -> Option<bool> {
    let mut selected = true;
    for (k, v) in s.match_labels.iter().flatten() {
        if k != NAMESPACE_NAME {
            return None;
        }
        selected &= v == ns;
    }
    for e in s.match_expressions.iter().flatten() {
        if e.key != NAMESPACE_NAME {
            return None;
        }
        let values = e.values.as_deref().unwrap_or_default();
        let listed = values.iter().any(|v| v == ns);
        selected &= match e.operator.as_str() {
            "In" => listed,
            "NotIn" => !listed,
            "Exists" => true,
            "DoesNotExist" => false,
            _ => return None,
        };
    }
    Some(selected)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chart's policy and binding, rendered by hand the way `helm
    /// template` does for the default values and for watchNamespaces.
    fn chart(namespaces: &[&str]) -> (ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding) {
        let policy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{"apiGroups": ["certpin.dev"], "apiVersions": ["*"],
                    "operations": ["CREATE", "UPDATE", "DELETE"], "resources": ["clientcertificatesets"]}]},
                "validations": [{"expression": "true"}]
            }
        }))
        .unwrap();
        let mut binding = serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"policyName": "p", "validationActions": ["Deny"]}
        });
        if !namespaces.is_empty() {
            binding["spec"]["matchResources"] = serde_json::json!({"namespaceSelector": {"matchExpressions": [
                {"key": NAMESPACE_NAME, "operator": "In", "values": namespaces}]}});
        }
        (policy, serde_json::from_value(binding).unwrap())
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_charts_boundary_is_installed_for_what_certpin_watches() {
        let (p, b) = chart(&[]);
        assert_eq!(judge("p", Some(&p), Some(&b), &[]), Verdict::Installed);
        let (p, b) = chart(&["a", "b"]);
        assert_eq!(
            judge("p", Some(&p), Some(&b), &strings(&["a", "b"])),
            Verdict::Installed
        );
        assert_eq!(
            judge("p", Some(&p), Some(&b), &strings(&["a"])),
            Verdict::Installed
        );
    }

    #[test]
    fn a_missing_or_narrower_boundary_is_reported() {
        let (p, b) = chart(&["a"]);
        assert_eq!(judge("p", None, Some(&b), &[]), Verdict::PolicyMissing);
        assert_eq!(judge("p", Some(&p), None, &[]), Verdict::BindingMissing);
        let not = |v: Verdict| match v {
            Verdict::NotMatching(why) => why.join("; "),
            other => panic!("{other:?}"),
        };
        // Bound to other namespaces, or to some while certpin watches all.
        let why = not(judge("p", Some(&p), Some(&b), &strings(&["a", "c"])));
        assert!(why.contains("leave out namespace c"), "{why}");
        assert!(!why.contains("namespace a"), "{why}");
        let why = not(judge("p", Some(&p), Some(&b), &[]));
        assert!(why.contains("certpin watches all of them"), "{why}");
        // The policy before issue 39: deletes pass.
        let (mut p, b) = chart(&[]);
        let rules = &mut p.spec.as_mut().unwrap().match_constraints.as_mut().unwrap();
        rules.resource_rules.as_mut().unwrap()[0].operations = Some(strings(&["CREATE", "UPDATE"]));
        let why = not(judge("p", Some(&p), Some(&b), &[]));
        assert!(
            why.contains("do not match DELETE of clientcertificatesets.certpin.dev"),
            "{why}"
        );
        // Audit only, another policy, a label the author controls.
        let (p, mut b) = chart(&[]);
        b.spec.validation_actions = strings(&["Audit", "Warn"]);
        b.spec.policy_name = "other".into();
        b.spec.match_resources = Some(
            serde_json::from_value(
                serde_json::json!({"objectSelector": {"matchLabels": {"checked": "yes"}}}),
            )
            .unwrap(),
        );
        let why = not(judge("p", Some(&p), Some(&b), &[]));
        assert!(why.contains("do not include Deny"), "{why}");
        assert!(why.contains("binds policy \"other\""), "{why}");
        assert!(why.contains("objectSelector"), "{why}");
        // Failures ignored; a selector on labels certpin cannot see.
        let (mut p, mut b) = chart(&[]);
        p.spec.as_mut().unwrap().failure_policy = Some("Ignore".into());
        b.spec.match_resources = Some(
            serde_json::from_value(
                serde_json::json!({"namespaceSelector": {"matchLabels": {"team": "a"}}}),
            )
            .unwrap(),
        );
        let why = not(judge("p", Some(&p), Some(&b), &strings(&["a"])));
        assert!(why.contains("failurePolicy is not Fail"), "{why}");
        assert!(why.contains("cannot tell whether they cover a"), "{why}");
    }

    #[test]
    fn the_charts_policy_names_certpins_finalizer() {
        let template = include_str!("../../charts/certpin/templates/tenant-boundary.yaml");
        let line = format!("$finalizer := \"{}\"", crate::names::FINALIZER);
        assert!(template.contains(&line), "{line} not in the chart's policy");
    }
}
