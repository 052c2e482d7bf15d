//! What the set refers to: its Secrets and ConfigMaps, its workload, and
//! what certpin rendered before.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use zeroize::Zeroizing;

use crate::names;
use crate::operator::context::Context;
use crate::operator::error::Result;
use crate::operator::reconcile::decide::build::Earlier;
use crate::operator::reconcile::kinds::{self, Workload};
use crate::operator::reconcile::reason::Reason;
use crate::resource::{CaCertificateSpec, CertificateSpec, ClientCertificateSet};

/// One certificate's raw material, or why it is not there yet.
pub enum Material {
    Pkcs12 {
        data: Vec<u8>,
        password: Zeroizing<String>,
    },
    Pem {
        crt: Vec<u8>,
        key: Zeroizing<Vec<u8>>,
    },
    /// Not (yet) available, or unusable as it is: why.
    Missing { reason: Reason, message: String },
    /// A reference that can never be read (not a valid name): not read.
    Invalid { message: String },
}

/// One CA bundle's bytes, or why they are not there.
pub enum CaMaterial {
    Bundle(Vec<u8>),
    Missing { reason: Reason, message: String },
    Invalid { message: String },
}

pub struct Inputs {
    pub materials: Vec<Material>,
    /// By spec.caCertificates order.
    pub ca_materials: Vec<CaMaterial>,
    /// The workload the set targets.
    pub workload: Option<Workload>,
    /// The objects under the rendered names, certpin's or not.
    pub previous: Previous,
}

/// The objects under the rendered names, as they are in the cluster.
#[derive(Default)]
pub struct Previous {
    /// The Secret there, if any (certpin's: to reuse its encoding).
    pub secret: Option<Secret>,
    /// The ConfigMap there, if any (certpin's: to skip an unchanged write).
    pub config_map: Option<ConfigMap>,
}

impl Previous {
    /// Those of the objects that this set made (its uid as controlling
    /// owner), and a description of each that it did not: certpin writes
    /// only to objects it created, so another's object under a rendered
    /// name stops the set instead of being taken over.
    pub fn split(
        &self,
        set: &ClientCertificateSet,
    ) -> (Earlier<'_>, Option<&ConfigMap>, Vec<String>) {
        let uid = set.metadata.uid.as_deref();
        let ours = |m: &ObjectMeta| {
            m.owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
        };
        let mut foreign = Vec::new();
        let secret = self.secret.as_ref().filter(|s| {
            let mine = ours(&s.metadata);
            if !mine {
                foreign.push(format!("Secret {:?}", names::rendered(set)));
            }
            mine
        });
        let config_map = self.config_map.as_ref().filter(|c| {
            let mine = ours(&c.metadata);
            if !mine {
                foreign.push(format!("ConfigMap {:?}", names::rendered(set)));
            }
            mine
        });
        (Earlier { secret }, config_map, foreign)
    }
}

/// Reads the objects certpin renders for `set`.
async fn previous(ctx: &Context, set: &ClientCertificateSet, ns: &str) -> Result<Previous> {
    let name = names::rendered(set);
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), ns);
    let config_maps = Api::<ConfigMap>::namespaced(ctx.client.clone(), ns);
    let (secret, config_map) =
        futures::try_join!(secrets.get_opt(&name), config_maps.get_opt(&name))?;
    Ok(Previous { secret, config_map })
}

pub async fn dereference(ctx: &Context, set: &ClientCertificateSet, ns: &str) -> Result<Inputs> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    // Every read at once: a pass waits for one round trip, not one per object.
    let names = crate::operator::name_index::referenced_secrets(set);
    let names = names.into_iter().filter(|n| names::is_dns_subdomain(n));
    let referenced = futures::future::try_join_all(names.map(|name| {
        let secrets = &secrets;
        async move {
            let found = secrets.get_opt(name).await?;
            Ok::<_, kube::Error>((name.to_string(), found))
        }
    }));
    // What is under the rendered names, read at once with the rest: a new
    // set must not take over an object someone else made.
    let prior = previous(ctx, set, ns);
    let workload = async {
        let (kind, name) = set.spec.app.target();
        if names::is_dns_subdomain(name) {
            kinds::get_opt(&ctx.client, ns, kind, name).await
        } else {
            Ok(None)
        }
    };
    let (referenced, workload, previous, config_maps) = futures::try_join!(
        async { Ok(referenced.await?) },
        workload,
        prior,
        read_config_maps(ctx, set, ns),
    )?;
    let read: BTreeMap<String, Option<Secret>> = referenced.into_iter().collect();
    let materials = set
        .spec
        .certificates
        .iter()
        .map(|c| material(&read, c))
        .collect();
    let ca_materials = set
        .spec
        .ca_certificates
        .iter()
        .map(|ca| ca_material(&read, &config_maps, ca))
        .collect();
    Ok(Inputs {
        materials,
        ca_materials,
        workload,
        previous,
    })
}

/// The ConfigMaps the CA entries name, read at once.
async fn read_config_maps(
    ctx: &Context,
    set: &ClientCertificateSet,
    ns: &str,
) -> Result<BTreeMap<String, Option<ConfigMap>>> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let names = crate::operator::name_index::referenced_config_maps(set);
    let names = names.into_iter().filter(|n| names::is_dns_subdomain(n));
    let found = futures::future::try_join_all(names.map(|name| {
        let api = &api;
        async move {
            let found = api.get_opt(name).await?;
            Ok::<_, kube::Error>((name.to_string(), found))
        }
    }))
    .await?;
    Ok(found.into_iter().collect())
}

fn ca_material(
    secrets: &BTreeMap<String, Option<Secret>>,
    config_maps: &BTreeMap<String, Option<ConfigMap>>,
    ca: &CaCertificateSpec,
) -> CaMaterial {
    // The entry's object, and its bytes: None when the object is not there,
    // Some(None) when the key is not.
    let (kind, not_found, name, key, data) = match (&ca.secret, &ca.config_map) {
        (Some(s), _) => {
            let found = secrets.get(s.secret_name.as_str()).and_then(Option::as_ref);
            let data = found.map(|o| key_of(o, &s.key));
            (
                "Secret",
                Reason::SecretNotFound,
                &s.secret_name,
                &s.key,
                data,
            )
        }
        (None, Some(c)) => {
            let found = config_maps.get(c.name.as_str()).and_then(Option::as_ref);
            let data = found.map(|o| config_map_key(o, &c.key));
            (
                "ConfigMap",
                Reason::ConfigMapNotFound,
                &c.name,
                &c.key,
                data,
            )
        }
        (None, None) => {
            return CaMaterial::Missing {
                reason: Reason::InvalidSpec,
                message: "give secret or configMap".into(),
            };
        }
    };
    if !names::is_dns_subdomain(name) {
        return CaMaterial::Invalid {
            message: format!("{name:?} is not a {kind} name (a DNS subdomain); it was not read"),
        };
    }
    match data {
        None => CaMaterial::Missing {
            reason: not_found,
            message: format!(
                "{kind} {name:?} does not exist (yet); certpin proceeds when it appears"
            ),
        },
        Some(None) => CaMaterial::Missing {
            reason: Reason::KeyNotFound,
            message: format!("{kind} {name:?} has no key {key:?}"),
        },
        Some(Some(bytes)) => CaMaterial::Bundle(bytes),
    }
}

fn config_map_key(c: &ConfigMap, key: &str) -> Option<Vec<u8>> {
    if let Some(v) = c.data.as_ref().and_then(|d| d.get(key)) {
        return Some(v.as_bytes().to_vec());
    }
    c.binary_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|ByteString(b)| b.clone())
}

fn key_of(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    if let Some(ByteString(b)) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Some(b.clone());
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|s| s.as_bytes().to_vec())
}

fn missing_secret(name: &str) -> Material {
    Material::Missing {
        reason: Reason::SecretNotFound,
        message: format!("Secret {name:?} does not exist (yet); certpin proceeds when it appears"),
    }
}

fn missing_key(name: &str, key: &str) -> Material {
    Material::Missing {
        reason: Reason::KeyNotFound,
        message: format!("Secret {name:?} has no key {key:?}"),
    }
}

/// One certificate's material, from the Secrets read (every one the set
/// names with a valid name).
fn material(read: &BTreeMap<String, Option<Secret>>, cert: &CertificateSpec) -> Material {
    if let Some(bad) = crate::operator::name_index::names_of(cert)
        .into_iter()
        .find(|n| !names::is_dns_subdomain(n))
    {
        return Material::Invalid {
            message: format!("{bad:?} is not a Secret name (a DNS subdomain); it was not read"),
        };
    }
    if let Some(tls) = &cert.tls {
        let name = &tls.secret_name;
        let crt = secret_value(read, name, "tls.crt");
        let key = secret_value(read, name, "tls.key");
        return match (crt, key) {
            (Err(missing), _) | (_, Err(missing)) => missing,
            (Ok(crt), Ok(key)) => Material::Pem {
                crt,
                key: Zeroizing::new(key),
            },
        };
    }
    let (Some(p12), Some(pw)) = (&cert.pkcs12, &cert.password) else {
        // The schema requires these; an old object may still lack them.
        return Material::Missing {
            reason: Reason::InvalidSpec,
            message: "give pkcs12 and password, or tls".into(),
        };
    };
    let data = match secret_value(read, &p12.secret_name, &p12.key) {
        Ok(data) => data,
        Err(missing) => return missing,
    };
    let password = match secret_value(read, &pw.secret_name, &pw.key) {
        Ok(password) => password,
        Err(missing) => return missing,
    };
    let Ok(password) = String::from_utf8(password) else {
        return Material::Missing {
            reason: Reason::InvalidPassword,
            message: format!(
                "the password in Secret {:?} key {:?} is not UTF-8 text",
                pw.secret_name, pw.key
            ),
        };
    };
    Material::Pkcs12 {
        data,
        password: Zeroizing::new(password),
    }
}

/// One key of a Secret, or the material saying which is missing.
fn secret_value(
    read: &BTreeMap<String, Option<Secret>>,
    name: &str,
    key: &str,
) -> std::result::Result<Vec<u8>, Material> {
    match read.get(name).and_then(Option::as_ref) {
        None => Err(missing_secret(name)),
        Some(s) => key_of(s, key).ok_or_else(|| missing_key(name, key)),
    }
}
