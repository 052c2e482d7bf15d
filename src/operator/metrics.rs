//! Prometheus metrics (prometheus-client): reconciliations and their
//! duration, failures by reason code, restarts, decodes, each client
//! certificate's and (in a series of its own) each CA certificate's notAfter
//! so an alert can fire before it expires, the build and whether this
//! replica leads. Labels never carry a secret.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::lock::lock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StrategyLabel {
    pub strategy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    pub namespace: String,
    pub set: String,
    pub certificate: String,
}

/// A CA certificate of a set's `caCertificates` entry (one entry may hold
/// many, told apart by fingerprint). Its own series: an expired CA in a
/// bundle is a warning, not the page an expired client certificate is.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CaCertificateLabels {
    pub namespace: String,
    pub set: String,
    pub entry: String,
    pub fingerprint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: String,
}

/// What one expiry gauge is about.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Expiry {
    /// A client certificate, by its name in the set.
    Client(String),
    /// A CA certificate: its `caCertificates` entry and SHA-256 fingerprint.
    Ca { entry: String, fingerprint: String },
}

/// One set's readiness, in the style of cert-manager's
/// `certmanager_certificate_ready_status`: 1 on the series of the current
/// condition status, with the Ready condition's reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabels {
    pub namespace: String,
    pub set: String,
    pub condition: String,
    pub reason: String,
}

/// The tenant boundary's state (see `boundary::Verdict::state`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BoundaryLabels {
    pub state: String,
}

pub struct Metrics {
    registry: Registry,
    /// 1 when the tenant boundary is installed and matching, else 0; one
    /// series, labelled with why.
    tenant_boundary: Family<BoundaryLabels, Gauge>,
    boundary_exported: Mutex<Option<BoundaryLabels>>,
    pub ready: Family<ReadyLabels, Gauge>,
    /// The readiness series exported per set, to drop it when it changes.
    ready_exported: Mutex<std::collections::HashMap<(String, String), ReadyLabels>>,
    pub reconciliations: Family<ResultLabel, Counter>,
    pub duration: Histogram,
    pub failures: Family<ReasonLabel, Counter>,
    pub restarts: Family<StrategyLabel, Counter>,
    pub not_after: Family<CertificateLabels, Gauge>,
    pub ca_not_after: Family<CaCertificateLabels, Gauge>,
    pub decodes: Counter,
    /// 1 while this replica leads (or runs without leader election).
    leader: Gauge,
    /// Certificates exported per set, to drop gauges of removed ones.
    exported: Mutex<std::collections::HashMap<(String, String), Vec<Expiry>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("certpin"),
            tenant_boundary: Family::default(),
            boundary_exported: Mutex::default(),
            ready: Family::default(),
            ready_exported: Mutex::default(),
            reconciliations: Family::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            failures: Family::default(),
            restarts: Family::default(),
            not_after: Family::default(),
            ca_not_after: Family::default(),
            decodes: Counter::default(),
            leader: Gauge::default(),
            exported: Mutex::default(),
        };
        m.describe_passes();
        m.describe_state();
        m
    }
}

impl Metrics {
    /// What certpin did: passes, failures, restarts, decodes.
    fn describe_passes(&mut self) {
        let r = &mut self.registry;
        r.register(
            "reconciliations",
            "Reconciliations of ClientCertificateSets, by result",
            self.reconciliations.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Duration of one reconciliation",
            self.duration.clone(),
        );
        r.register(
            "reconcile_failures",
            "Reconciliations that left a set not Ready, by reason code (e.g. WrongPassword) or API error",
            self.failures.clone(),
        );
        r.register(
            "restarts",
            "App restarts certpin performed, by strategy",
            self.restarts.clone(),
        );
        r.register(
            "pkcs12_decodes",
            "PKCS12/PEM decodes performed (cache misses)",
            self.decodes.clone(),
        );
    }

    /// What holds now: expiries, readiness, leadership, the boundary.
    fn describe_state(&mut self) {
        let r = &mut self.registry;
        r.register(
            "certificate_not_after_timestamp_seconds",
            "The certificate's notAfter, as a Unix timestamp",
            self.not_after.clone(),
        );
        r.register(
            "ca_certificate_not_after_timestamp_seconds",
            "A CA certificate's notAfter (caCertificates entry, SHA-256 fingerprint), as a Unix timestamp",
            self.ca_not_after.clone(),
        );
        let build_info = Family::<VersionLabel, Gauge>::default();
        let version = env!("CARGO_PKG_VERSION").into();
        build_info.get_or_create(&VersionLabel { version }).set(1);
        r.register(
            "build_info",
            "1, labelled with the running certpin's version",
            build_info,
        );
        r.register(
            "leader",
            "1 while this replica is the leader (the one that reconciles), else 0",
            self.leader.clone(),
        );
        r.register(
            "set_ready_status",
            "1 for each set's current Ready condition status (True or False) and reason",
            self.ready.clone(),
        );
        r.register(
            "tenant_boundary_installed",
            "1 when the tenant boundary (ValidatingAdmissionPolicy and binding) is installed and covers the sets certpin watches, else 0; state says why",
            self.tenant_boundary.clone(),
        );
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Sets one set's readiness series (`None`: the set is gone).
    /// One pass ended, after `took`, with or without an error.
    pub fn observe_pass(&self, took: std::time::Duration, ok: bool) {
        self.duration.observe(took.as_secs_f64());
        let result = if ok { "ok" } else { "error" };
        self.reconciliations
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    pub fn set_ready(&self, ns: &str, set: &str, ready: Option<(bool, &str)>) {
        let mut exported = lock(&self.ready_exported);
        let key = (ns.to_string(), set.to_string());
        let now = ready.map(|(ok, reason)| ReadyLabels {
            namespace: ns.into(),
            set: set.into(),
            condition: if ok { "True" } else { "False" }.into(),
            reason: reason.into(),
        });
        if let Some(old) = exported.remove(&key)
            && Some(&old) != now.as_ref()
        {
            self.ready.remove(&old);
        }
        if let Some(labels) = now {
            self.ready.get_or_create(&labels).set(1);
            exported.insert(key, labels);
        }
    }

    /// Sets the tenant boundary's gauge: one series, for the current state.
    pub fn set_tenant_boundary(&self, state: &str, installed: bool) {
        let labels = BoundaryLabels {
            state: state.into(),
        };
        let mut exported = lock(&self.boundary_exported);
        self.tenant_boundary
            .get_or_create(&labels)
            .set(i64::from(installed));
        if let Some(old) = exported.replace(labels.clone())
            && old != labels
        {
            self.tenant_boundary.remove(&old);
        }
    }

    /// Whether this replica leads: only the leader reconciles.
    pub fn set_leader(&self, leads: bool) {
        self.leader.set(i64::from(leads));
    }

    /// Replaces the expiry gauges (client and CA certificates) of one set;
    /// an empty list drops them all.
    pub fn set_expiries(&self, ns: &str, set: &str, certs: &[(Expiry, i64)]) {
        let mut exported = lock(&self.exported);
        let key = (ns.to_string(), set.to_string());
        let gauge = |e: &Expiry, value: Option<i64>| match e {
            Expiry::Client(c) => {
                let labels = CertificateLabels {
                    namespace: ns.into(),
                    set: set.into(),
                    certificate: c.clone(),
                };
                match value {
                    Some(t) => {
                        self.not_after.get_or_create(&labels).set(t);
                    }
                    None => {
                        self.not_after.remove(&labels);
                    }
                }
            }
            Expiry::Ca { entry, fingerprint } => {
                let labels = CaCertificateLabels {
                    namespace: ns.into(),
                    set: set.into(),
                    entry: entry.clone(),
                    fingerprint: fingerprint.clone(),
                };
                match value {
                    Some(t) => {
                        self.ca_not_after.get_or_create(&labels).set(t);
                    }
                    None => {
                        self.ca_not_after.remove(&labels);
                    }
                }
            }
        };
        for old in exported.remove(&key).unwrap_or_default() {
            if !certs.iter().any(|(c, _)| *c == old) {
                gauge(&old, None);
            }
        }
        for (c, t) in certs {
            gauge(c, Some(*t));
        }
        if !certs.is_empty() {
            exported.insert(key, certs.iter().map(|(c, _)| c.clone()).collect());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_has_one_readiness_series_which_follows_its_reason_and_goes_with_it() {
        let m = Metrics::default();
        m.set_ready("shop", "prod", Some((false, "RolloutInProgress")));
        m.set_ready("shop", "prod", Some((true, "Applied")));
        let text = m.encode();
        assert!(
            text.contains(r#"certpin_set_ready_status{namespace="shop",set="prod",condition="True",reason="Applied"} 1"#),
            "{text}"
        );
        assert!(!text.contains("RolloutInProgress"), "{text}");
        m.set_ready("shop", "prod", None);
        assert!(!m.encode().contains(r#"set="prod""#));
    }

    #[test]
    fn ca_certificates_have_their_own_series_and_go_with_their_set() {
        let m = Metrics::default();
        let ca = Expiry::Ca {
            entry: "partner-ca".into(),
            fingerprint: "AB:CD".into(),
        };
        m.set_expiries(
            "shop",
            "prod",
            &[
                (Expiry::Client("partner-a".into()), 2000),
                (ca.clone(), 1000),
            ],
        );
        let text = m.encode();
        let client = r#"certpin_certificate_not_after_timestamp_seconds{namespace="shop",set="prod",certificate="partner-a"} 2000"#;
        let ca_line = r#"certpin_ca_certificate_not_after_timestamp_seconds{namespace="shop",set="prod",entry="partner-ca",fingerprint="AB:CD"} 1000"#;
        assert!(text.contains(client), "{text}");
        assert!(text.contains(ca_line), "{text}");
        // The client series holds client certificates only.
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("certpin_certificate_not_after_timestamp_seconds{"))
                .count(),
            1,
            "{text}"
        );
        m.set_expiries("shop", "prod", &[(ca, 1000)]);
        let text = m.encode();
        assert!(!text.contains(client), "{text}");
        assert!(text.contains(ca_line), "{text}");
        m.set_expiries("shop", "prod", &[]);
        assert!(!m.encode().contains(r#"set="prod""#));
    }

    #[test]
    fn build_info_and_leader() {
        let m = Metrics::default();
        let build = format!(
            "certpin_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(m.encode().lines().any(|l| l == build), "{}", m.encode());
        assert!(m.encode().lines().any(|l| l == "certpin_leader 0"));
        m.set_leader(true);
        assert!(m.encode().lines().any(|l| l == "certpin_leader 1"));
        m.set_leader(false);
        assert!(m.encode().lines().any(|l| l == "certpin_leader 0"));
    }

    #[test]
    fn the_tenant_boundary_has_one_series() {
        let m = Metrics::default();
        m.set_tenant_boundary("policy-missing", false);
        m.set_tenant_boundary("installed", true);
        let text = m.encode();
        assert!(
            text.contains(r#"certpin_tenant_boundary_installed{state="installed"} 1"#),
            "{text}"
        );
        assert!(!text.contains("policy-missing"), "{text}");
    }
}
