//! The committed definition: current, valid for AWS, and within the history quota for the largest recipe
//! validation accepts. The bound is computed from the committed JSON itself, not from the generator's constants.

use std::collections::BTreeMap;

use serde_json::Value;

use super::*;
use crate::model::error::Error;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../statemachine/pipeline.asl.json");

fn committed() -> Value {
    let text = std::fs::read_to_string(COMMITTED).expect("statemachine/pipeline.asl.json");
    serde_json::from_str(&text).expect("the committed definition is JSON")
}

fn states(d: &Value) -> &serde_json::Map<String, Value> {
    d["States"].as_object().expect("States")
}

/// `make schema` (`UPDATE_SCHEMA=1`) rewrites the committed recipe schema, generated from `model::recipe`'s types.
#[test]
fn committed_schema_is_current() {
    assert_committed(
        "infra/recipe.schema.json",
        &crate::model::recipe::json_schema(),
        "UPDATE_SCHEMA",
        "schema",
    );
}

#[test]
fn committed_definition_is_current() {
    assert_committed(
        "statemachine/pipeline.asl.json",
        &render(),
        "UPDATE_DEFINITION",
        "definition",
    );
}

/// Step Functions quotas and pricing: a Task is 5 history events (entered, scheduled, started,
/// succeeded/failed, exited) and each retry 3 more (scheduled, started, failed); Pass, Wait and Choice are 2;
/// each state entered and each retry is one billed transition.
fn cost(state: &Value) -> (u64, u64) {
    let retries: u64 = state["Retry"]
        .as_array()
        .map(|r| r.iter().map(|r| r["MaxAttempts"].as_u64().unwrap_or(3)).sum())
        .unwrap_or(0);
    match state["Type"].as_str() {
        Some("Task") => (5 + 3 * retries, 1 + retries),
        Some("Fail") => (2, 1),
        _ => (2, 1),
    }
}

fn successors(state: &Value) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    out.extend(state["Next"].as_str());
    out.extend(state["Default"].as_str());
    for key in ["Choices", "Catch"] {
        if let Some(list) = state[key].as_array() {
            out.extend(list.iter().filter_map(|c| c["Next"].as_str()));
        }
    }
    out
}

/// The most (events, transitions) any execution can take from `name` on, over the graph's paths (every retrier
/// exhausted, then caught). Panics on a loop: the bound below holds only because the graph has none.
fn worst_from<'a>(
    all: &'a serde_json::Map<String, Value>,
    name: &'a str,
    seen: &mut Vec<&'a str>,
    memo: &mut BTreeMap<&'a str, (u64, u64)>,
) -> (u64, u64) {
    if let Some(c) = memo.get(name) {
        return *c;
    }
    assert!(
        !seen.contains(&name),
        "the definition loops through `{name}`: its history is not bounded"
    );
    seen.push(name);
    let state = &all[name];
    let (events, transitions) = cost(state);
    let rest = successors(state)
        .into_iter()
        .map(|n| worst_from(all, n, seen, memo))
        .max()
        .unwrap_or((0, 0));
    seen.pop();
    let total = (events + rest.0, transitions + rest.1);
    memo.insert(name, total);
    total
}

/// Seconds a status Task's NotReady retrier keeps polling, from its committed fields (the first Wait not
/// counted, so this is a lower bound).
fn poll_coverage(retrier: &Value) -> f64 {
    let interval = retrier["IntervalSeconds"].as_f64().unwrap_or(1.0);
    let rate = retrier["BackoffRate"].as_f64().unwrap_or(2.0);
    let cap = retrier["MaxDelaySeconds"].as_f64().unwrap_or(f64::INFINITY);
    let attempts = retrier["MaxAttempts"].as_u64().unwrap_or(3);
    (0..attempts).map(|k| (interval * rate.powi(k as i32)).min(cap)).sum()
}

#[test]
fn worst_case_history_is_half_the_quota_for_the_largest_recipe() {
    let d = committed();
    let all = states(&d);
    let start = d["StartAt"].as_str().expect("StartAt");
    let (events, transitions) = worst_from(all, start, &mut Vec::new(), &mut BTreeMap::new());
    // + ExecutionStarted and ExecutionFailed/Succeeded.
    let events = events + 2;
    eprintln!("worst case: {events} history events, {transitions} state transitions");
    assert!(
        events <= 12_500,
        "worst case {events} history events: above half of the 25,000 quota"
    );

    // Each poll loop outlasts the longest timeout validation accepts for its step, so the step ends with the
    // handler's Timeout (caught, cleaned up), never with the retrier running out first.
    let longest = BTreeMap::from([
        ("$.steps.build", limits::BUILD_MINUTES),
        ("$.steps.snapshot", limits::IMAGE_MINUTES),
        ("$.steps.register", limits::IMAGE_MINUTES),
        ("$.steps.test_launch", limits::TEST_MINUTES),
        ("$.steps.copy", limits::COPY_MINUTES),
    ]);
    let mut polled = 0;
    for (name, state) in all {
        let Some(poll) = state["Retry"].as_array().and_then(|r| {
            r.iter()
                .find(|r| r["ErrorEquals"] == serde_json::json!(["AmiPipeline.NotReady"]))
        }) else {
            continue;
        };
        polled += 1;
        assert_eq!(
            state["Parameters"]["action"], "status",
            "{name}: only status calls poll"
        );
        let path = state["ResultPath"].as_str().unwrap_or("");
        let minutes = longest
            .get(path)
            .unwrap_or_else(|| panic!("{name}: no timeout limit for {path}"));
        let covered = poll_coverage(poll);
        assert!(
            covered >= f64::from(*minutes) * 60.0,
            "{name}: polls for {covered:.0} s, less than the {minutes}-minute limit"
        );
    }
    assert_eq!(polled, longest.len(), "one poll loop per long step");
}

#[test]
fn every_task_retries_and_catches_with_names_the_handlers_emit() {
    let d = committed();
    for (name, state) in states(&d) {
        if state["Type"] != "Task" {
            continue;
        }
        let retry = state["Retry"].as_array().unwrap_or_else(|| panic!("{name}: no Retry"));
        assert!(
            state["Catch"].as_array().is_some_and(|c| !c.is_empty()),
            "{name}: no Catch"
        );
        assert!(
            retry
                .iter()
                .any(|r| r["ErrorEquals"] == serde_json::json!(LAMBDA_ERRORS)),
            "{name}: Lambda service errors not retried"
        );
        // A Lambda killed at its timeout is retried under either name Step Functions gives it, a little.
        assert!(
            retry
                .iter()
                .any(|r| r["ErrorEquals"] == serde_json::json!(LAMBDA_TIMEOUTS)
                    && r["MaxAttempts"].as_u64().is_some_and(|m| (1..=2).contains(&m))),
            "{name}: a Lambda timeout is not retried (or retried more than twice)"
        );
        for r in retry {
            for e in r["ErrorEquals"].as_array().expect("ErrorEquals") {
                let e = e.as_str().expect("error name");
                assert!(
                    LAMBDA_ERRORS.contains(&e) || LAMBDA_TIMEOUTS.contains(&e) || Error::ALL_TYPES.contains(&e),
                    "{name}: retries `{e}`, which no handler emits"
                );
                assert_ne!(
                    e, "AmiPipeline.Timeout",
                    "{name}: a deadline must end the step, not be retried"
                );
            }
            // Retrier fields as AWS accepts them (States Language, "Retrying after an error"): whole seconds.
            // "IntervalSeconds has a maximum value of 99999999"; MaxDelaySeconds "greater than 0 and less than
            // 31622401".
            for (key, max) in [("IntervalSeconds", 99_999_999), ("MaxDelaySeconds", 31_622_400)] {
                if let Some(v) = r.get(key) {
                    assert!(
                        v.as_u64().is_some_and(|v| (1..=max).contains(&v)),
                        "{name}: {key} out of range"
                    );
                }
            }
            assert!(
                r["MaxAttempts"].as_u64().is_some_and(|m| m <= 99_999_999),
                "{name}: MaxAttempts"
            );
            assert!(
                r["BackoffRate"].as_f64().is_some_and(|b| b >= 1.0),
                "{name}: BackoffRate"
            );
            assert!(
                matches!(r["JitterStrategy"].as_str(), Some("FULL" | "NONE")),
                "{name}: JitterStrategy"
            );
        }
        let resource = state["Resource"].as_str().unwrap_or("");
        let function = resource.trim_start_matches("${").trim_end_matches('}');
        assert!(functions().contains(&function), "{name}: unknown resource {resource}");
        // Outputs go under $.steps.<step>, but the reports no later state reads stay out of the state (`payload`).
        if matches!(name.as_str(), "Retire" | "Cleanup") {
            assert!(state["ResultPath"].is_null(), "{name}: ResultPath");
        } else {
            assert!(
                state["ResultPath"].as_str().is_some_and(|p| p.starts_with("$.steps.")),
                "{name}: ResultPath"
            );
        }
    }
}

#[test]
fn status_tasks_retry_only_service_faults_and_not_ready() {
    // A status Task's retry counters last for the whole step (they are kept per state entry), so throttling
    // must be answered NotReady by the handler, not spent from a fixed budget.
    let d = committed();
    for (name, state) in states(&d) {
        if state["Parameters"]["action"] != "status" {
            continue;
        }
        for r in state["Retry"].as_array().expect("Retry") {
            let names = &r["ErrorEquals"];
            assert!(
                *names == serde_json::json!(LAMBDA_ERRORS)
                    || *names == serde_json::json!(["AmiPipeline.NotReady"])
                    || *names == serde_json::json!(LAMBDA_TIMEOUTS),
                "{name}: retries {names}"
            );
        }
    }
}

/// The actions a step's handler takes (`StepDef::actions`, its rejection message) are exactly those the committed
/// definition sends its function.
#[test]
fn each_function_is_sent_exactly_the_actions_its_step_takes() {
    let d = committed();
    let mut sent: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for state in states(&d).values().filter(|s| s["Type"] == "Task") {
        let function = state["Resource"].as_str().expect("Resource");
        let action = state["Parameters"]["action"].as_str().expect("action");
        let actions = sent.entry(function).or_default();
        if !actions.contains(&action) {
            actions.push(action);
        }
    }
    for step in &ALL {
        let mut want = step.actions().to_vec();
        let mut got = sent
            .get(format!("${{{}}}", step.function).as_str())
            .cloned()
            .unwrap_or_default();
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want, "{}", step.name());
    }
}
