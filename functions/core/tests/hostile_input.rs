//! Property tests: any input to the event parser, the recipe parser and the name sanitizers gives a valid result
//! or an error that names a field, and never panics.

use ami_core::model::naming;
use ami_core::model::recipe::Recipe;
use ami_core::{Error, model::event};
use proptest::prelude::*;

const WEB: &str = include_str!("../../../infra/recipes/al2023-web.json");

fn is_ami_name(s: &str) -> bool {
    (3..=128).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "()[]./-'@_ ".contains(c))
}

fn names_a_field(err: &Error) -> bool {
    matches!(err, Error::InvalidInput { field, .. } if !field.is_empty())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn sanitized_ami_names_are_always_valid(raw in any::<String>()) {
        prop_assert!(is_ami_name(&naming::sanitize_ami_name(&raw)));
    }

    #[test]
    fn rendered_image_names_are_valid_for_any_template_values(p in any::<String>(), v in any::<String>(), e in any::<String>()) {
        let name = naming::render_image_name(
            "{{pipeline}}-{{version}}-{{date}}-{{id}}",
            &naming::NameValues { pipeline: &p, version: &v, date: "20261126", execution: &e },
        );
        prop_assert!(is_ami_name(&name), "{name:?}");
    }

    #[test]
    fn execution_names_are_valid_and_deterministic(p in any::<String>(), v in any::<String>()) {
        let a = naming::release_execution_name(&p, &v);
        prop_assert!(!a.is_empty() && a.len() <= 80);
        prop_assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{a}");
        prop_assert_eq!(a, naming::release_execution_name(&p, &v));
    }

    #[test]
    fn tag_values_fit(s in any::<String>()) {
        let v = ami_core::aws::tags::value(&s);
        prop_assert!(v.chars().count() <= 256 && !v.chars().any(char::is_control));
    }

    #[test]
    fn release_events_never_panic_and_errors_name_a_field(
        pipeline in any::<String>(), version in any::<String>(), commit in proptest::option::of(any::<String>()),
    ) {
        let ev = serde_json::json!({"detail-type": "Release Published", "source": "ci", "detail":
            {"pipeline": pipeline, "version": version, "commit": commit}});
        match event::parse(ev) {
            Ok(event::TriggerEvent::Release { detail, .. }) => {
                // Whatever passes is safe to put in a script, a name and a tag.
                prop_assert!(naming::check_version("v", &detail.version).is_ok());
                prop_assert!(detail.version.chars().all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c)));
            }
            Ok(other) => prop_assert!(false, "unexpected {other:?}"),
            Err(e) => prop_assert!(names_a_field(&e), "{e}"),
        }
    }

    #[test]
    fn arbitrary_json_events_never_panic(text in "\\PC{0,200}") {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            && let Err(e) = event::parse(v)
        {
            prop_assert!(names_a_field(&e), "{e}");
        }
    }

    #[test]
    fn mutated_recipes_are_accepted_or_rejected_with_a_field(
        path in prop::sample::select(vec![
            "/name", "/source/image/owners/0", "/build/instance_type", "/build/script", "/build/timeout_minutes",
            "/image/name", "/image/tags/team", "/distribution/regions/0", "/distribution/accounts/0",
            "/retention/keep", "/test/timeout_minutes", "/publish/ssm_parameters/0", "/refresh",
        ]),
        value in prop_oneof![
            any::<String>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
            Just(serde_json::json!([1, 2])),
        ],
    ) {
        let mut v: serde_json::Value = serde_json::from_str(WEB).unwrap();
        if let Some(slot) = v.pointer_mut(path) {
            *slot = value;
        }
        if let Err(e) = Recipe::from_json(&v.to_string()) {
            prop_assert!(names_a_field(&e), "{e}");
        }
    }
}
