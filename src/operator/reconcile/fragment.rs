//! A server-side apply body against the live object (pure): whether the
//! object already holds it, and what applying it leaves in the fields a
//! watch trigger looks at.

use serde_json::Value;

use crate::operator::reconcile::kinds::Workload;

/// Whether the live workload already carries exactly this fragment, so an
/// idle resync makes no write at all.
pub fn workload_has(live: &Workload, fragment: &Value) -> bool {
    contains(&live.to_value(), fragment)
}

/// `want` is contained in `have`: every field of `want` is in `have` with the
/// same value; lists of objects with a `name` match by name, others by position.
pub fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w.iter().all(|(k, wv)| {
            if k == "apiVersion" || k == "kind" || k == "namespace" {
                return true;
            }
            h.get(k).is_some_and(|hv| contains(hv, wv))
        }),
        (Value::Array(h), Value::Array(w)) => {
            w.iter().enumerate().all(|(i, wv)| match wv.get("name") {
                Some(name) => h
                    .iter()
                    .any(|hv| hv.get("name") == Some(name) && contains(hv, wv)),
                None => h.get(i).is_some_and(|hv| contains(hv, wv)),
            })
        }
        (h, w) => h == w,
    }
}

/// What applying `fragment` to `live` should leave in the fields a watch
/// trigger looks at: the spec generation (one more when the spec changes)
/// and the annotations (the fragment's over the live ones).
pub fn after_apply(live: &Workload, fragment: &Value) -> Workload {
    let mut next = live.clone();
    let live_spec = live.to_value().get("spec").cloned().unwrap_or(Value::Null);
    if let Some(spec) = fragment.get("spec")
        && !contains(&live_spec, spec)
    {
        next.meta_mut().generation = Some(live.meta().generation.unwrap_or(0) + 1);
    }
    if let Some(Value::Object(annotations)) = fragment.pointer("/metadata/annotations") {
        let merged = next
            .meta_mut()
            .annotations
            .get_or_insert_with(Default::default);
        for (k, v) in annotations {
            if let Value::String(v) = v {
                merged.insert(k.clone(), v.clone());
            }
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::{Workload, after_apply, contains};
    use crate::resource::WorkloadKind;
    use serde_json::json;

    #[test]
    fn after_apply_bumps_the_generation_only_for_a_spec_change_and_merges_annotations() {
        let live = Workload::from_value(WorkloadKind::Deployment, json!({
            "metadata": {"name": "app", "generation": 4, "annotations": {"keep": "1", "certpin.dev/set": "old"}},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}
        }))
        .unwrap();
        let annotations_only = json!({"metadata": {"annotations": {"certpin.dev/set": "s"}},
            "spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}});
        let next = after_apply(&live, &annotations_only);
        assert_eq!(next.meta().generation, Some(4));
        let a = next.meta().annotations.clone().unwrap();
        assert_eq!(
            (a["keep"].as_str(), a["certpin.dev/set"].as_str()),
            ("1", "s")
        );
        let wiring = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "env": [{"name": "E", "value": "v"}]}]}}}});
        assert_eq!(after_apply(&live, &wiring).meta().generation, Some(5));
    }

    #[test]
    fn containment_matches_named_lists_by_name_and_ignores_extra_fields() {
        let have = json!({"spec": {"containers": [
            {"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "b", "image": "y"}]}});
        assert!(contains(
            &have,
            &json!({"spec": {"containers": [{"name": "a", "env": [{"name": "B", "value": "2"}]}]}})
        ));
        assert!(!contains(
            &have,
            &json!({"spec": {"containers": [{"name": "a", "env": [{"name": "B", "value": "3"}]}]}})
        ));
        assert!(!contains(
            &have,
            &json!({"spec": {"containers": [{"name": "c"}]}})
        ));
        assert!(contains(
            &have,
            &json!({"apiVersion": "apps/v1", "spec": {}})
        ));
    }
}
