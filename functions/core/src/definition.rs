//! The state machine's definition, generated from the compact description below. The committed
//! `statemachine/pipeline.asl.json` is what SAM deploys; `committed_definition_is_current` fails when it is stale
//! (`make definition` rewrites it).
//!
//! One rule for outputs: each step's Tasks write `$.steps.<step>`, except the reports no later state reads, retire's
//! and cleanup's, which stay in the execution history and out of the state (`ResultPath: null`; `payload`). A long step is `<Step> Start` (Task, action
//! `start`), `<Step> Wait` (the first wait, from the start output) and `<Step> Status` (Task, action `status`),
//! whose Retry on `AmiPipeline.NotReady` is the poll loop: one transition and three history events per poll, and
//! no loop in the graph, so the worst case is a sum the tests compute from the committed JSON.

use serde_json::{Map, Value, json};

use crate::model::recipe::limits;
use crate::model::steps::polling;

/// The errors Step Functions raises for Lambda service faults, retried as AWS recommends ("Handle transient
/// Lambda service exceptions", Step Functions developer guide).
pub const LAMBDA_ERRORS: &[&str] = &[
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.TooManyRequestsException",
];

/// Written into a succeeded execution's output (`warnings.notice`) when a step after publish failed; the
/// template's notification rule matches it in the status-change event's `output` (EventBridge wildcard).
pub const WARNING_NOTICE: &str = "ami-pipeline-warning: released and published, but a step after publish failed; \
                                  the next run retries it";

/// One Task-backed step of the pipeline: what the definition calls, and what the step's handler answers to
/// (`crate::step::Step::DEF`): its name in messages and the actions the state machine sends it, so both are written
/// here once.
pub struct StepDef {
    /// The key under `$.steps`, and the first word of the state names (capitalised).
    key: &'static str,
    title: &'static str,
    /// The `${...}` substitution of the function's ARN.
    function: &'static str,
    /// The function's binary (its crate's `[[bin]]`, and its `dist/<binary>/bootstrap.zip`).
    binary: &'static str,
    what: &'static str,
    /// For a long step: the most minutes validation lets it take; its Status Task's retrier outlasts that.
    poll_minutes: Option<u32>,
    /// Whether the definition sends it `finish` after success (`<Title> Finish`, build and test).
    finish: bool,
}

impl StepDef {
    /// The step's name in messages: its binary without `ami-` ("test-launch").
    pub fn name(&self) -> &'static str {
        self.binary.trim_start_matches("ami-")
    }

    /// The actions the definition sends it: `start`, `status` for a long step, `finish` where it has one.
    pub fn actions(&self) -> &'static [&'static str] {
        match (self.poll_minutes.is_some(), self.finish) {
            (false, false) => &["start"],
            (false, true) => &["start", "finish"],
            (true, false) => &["start", "status"],
            (true, true) => &["start", "status", "finish"],
        }
    }
}

pub const BUILD: StepDef = StepDef {
    key: "build",
    binary: "ami-build",
    title: "Build",
    function: "BuildFunctionArn",
    what: "the builder (vetted base image, provisioning script)",
    poll_minutes: Some(limits::BUILD_MINUTES),
    finish: true,
};
pub const SNAPSHOT: StepDef = StepDef {
    key: "snapshot",
    binary: "ami-snapshot",
    title: "Snapshot",
    function: "SnapshotFunctionArn",
    what: "the snapshots of the builder's (or source instance's) volumes",
    poll_minutes: Some(limits::IMAGE_MINUTES),
    finish: false,
};
pub const REGISTER: StepDef = StepDef {
    key: "register",
    binary: "ami-register",
    title: "Register",
    function: "RegisterFunctionArn",
    what: "the candidate image",
    poll_minutes: Some(limits::IMAGE_MINUTES),
    finish: false,
};
pub const TEST: StepDef = StepDef {
    key: "test_launch",
    binary: "ami-test-launch",
    title: "Test",
    function: "TestLaunchFunctionArn",
    what: "the test launch (status checks and smoke test)",
    poll_minutes: Some(limits::TEST_MINUTES),
    finish: true,
};
pub const COPY: StepDef = StepDef {
    key: "copy",
    binary: "ami-copy",
    title: "Copy",
    function: "CopyFunctionArn",
    what: "the copies to every other region of the run, started together and polled in one call",
    poll_minutes: Some(limits::COPY_MINUTES),
    finish: false,
};
pub const SHARE: StepDef = StepDef {
    key: "share",
    binary: "ami-share",
    title: "Share",
    function: "ShareFunctionArn",
    what: "launch (and snapshot create-volume) permissions in every region of the run",
    poll_minutes: None,
    finish: false,
};
pub const PUBLISH: StepDef = StepDef {
    key: "publish",
    binary: "ami-publish",
    title: "Publish",
    function: "PublishFunctionArn",
    what: "the images marked released, the recipe's SSM parameters and launch templates pointed at them",
    poll_minutes: None,
    finish: false,
};
pub const RETIRE: StepDef = StepDef {
    key: "retire",
    binary: "ami-retire",
    title: "Retire",
    function: "RetireFunctionArn",
    what: "older released images beyond recipe.retention deprecated and deregistered",
    poll_minutes: None,
    finish: false,
};
pub const CLEANUP: StepDef = StepDef {
    key: "cleanup",
    binary: "ami-cleanup",
    title: "Cleanup",
    function: "CleanupFunctionArn",
    what: "after any failure, this execution's instances, candidate images and snapshots removed in every region \
           (found by tag); the original error stays in $.error",
    poll_minutes: None,
    finish: false,
};

const ALL: [StepDef; 9] = [BUILD, SNAPSHOT, REGISTER, TEST, COPY, SHARE, PUBLISH, RETIRE, CLEANUP];

/// Every function the definition calls, by the substitution name SAM fills in.
pub fn functions() -> Vec<&'static str> {
    ALL.iter().map(|s| s.function).collect()
}

/// (binary, substitution, key under `$.steps`) of every function the definition calls.
pub fn function_table() -> Vec<(&'static str, &'static str, &'static str)> {
    ALL.iter().map(|s| (s.binary, s.function, s.key)).collect()
}

fn lambda_retrier() -> Value {
    json!({"ErrorEquals": LAMBDA_ERRORS, "IntervalSeconds": 2, "MaxAttempts": 6, "BackoffRate": 2,
           "JitterStrategy": "FULL"})
}

/// The same for a status Task, whose retry counters last the whole step ("A retrier's parameters apply across
/// all visits to the retrier in the context of a single-state execution", Step Functions developer guide): up to
/// hundreds of polls share this budget, so it is larger, and capped so each retry stays a short pause.
fn lambda_retrier_polling() -> Value {
    json!({"ErrorEquals": LAMBDA_ERRORS, "IntervalSeconds": 2, "MaxAttempts": 20, "BackoffRate": 2,
           "MaxDelaySeconds": 60, "JitterStrategy": "FULL"})
}

/// Retries a throttled or failed AWS call of a one-shot Task (start, finish, share ...): every such action is
/// idempotent, so a retry repeats it safely.
fn transient_retrier() -> Value {
    json!({"ErrorEquals": ["AmiPipeline.Throttled", "AmiPipeline.Transient"], "IntervalSeconds": 5,
           "MaxAttempts": 5, "BackoffRate": 2, "MaxDelaySeconds": 60, "JitterStrategy": "FULL"})
}

/// Retries a start or one-shot Task refused by an EC2 limit that lifts as other work finishes (concurrent
/// snapshots, copies in progress, running instances: `AmiPipeline.LimitExceeded`) or by a lack of capacity in
/// every subnet and instance type the recipe allows (`AmiPipeline.NoCapacity`, which "can occur when you launch a
/// new instance": capacity comes back within minutes). Longer than throttling: 30 s doubling to 5 minutes, up to
/// about 17 minutes in all before the run fails.
fn limit_retrier() -> Value {
    json!({"ErrorEquals": ["AmiPipeline.LimitExceeded", "AmiPipeline.NoCapacity"], "IntervalSeconds": 30,
           "MaxAttempts": 6, "BackoffRate": 2, "MaxDelaySeconds": 300, "JitterStrategy": "FULL"})
}

/// The names under which a Lambda killed at its timeout reaches Step Functions: `Sandbox.Timedout`, the error type
/// current runtimes give it (Lambda developer guide, "Troubleshoot invocation issues"), and `Lambda.Unknown`, as the
/// Step Functions developer guide still documents it ("Handle Lambda service exceptions": unhandled errors "include
/// out-of-memory errors and function timeouts"). Both are retried: handlers stop before the timeout
/// (`runtime::ensure_time_left`), so this is the rare call that hung, and every action is idempotent, so one more try
/// is safe. Two attempts, so an out-of-memory kill (also `Lambda.Unknown`) that would repeat costs two short retries
/// before the Catch.
pub const LAMBDA_TIMEOUTS: &[&str] = &["Sandbox.Timedout", "Lambda.Unknown"];

fn lambda_timeout_retrier() -> Value {
    json!({"ErrorEquals": LAMBDA_TIMEOUTS, "IntervalSeconds": 5, "MaxAttempts": 2, "BackoffRate": 2,
           "JitterStrategy": "FULL"})
}

/// The poll loop of a status Task. No jitter, so the schedule (and the detection delay) is exact.
fn poll_retrier(minutes: u32) -> Value {
    json!({"ErrorEquals": ["AmiPipeline.NotReady"], "IntervalSeconds": polling::INTERVAL_SECONDS,
           "MaxAttempts": polling::attempts_to_cover(minutes), "BackoffRate": polling::BACKOFF_RATE,
           "MaxDelaySeconds": polling::MAX_DELAY_SECONDS, "JitterStrategy": "NONE"})
}

fn task(step: &StepDef, action: &str, comment: &str, retry: Vec<Value>, catch_next: &str, next: Option<&str>) -> Value {
    let mut t = json!({
        "Type": "Task",
        "Comment": comment,
        "Resource": format!("${{{}}}", step.function),
        "Parameters": {
            "action": action,
            "execution": {"name.$": "$$.Execution.Name", "id.$": "$$.Execution.Id"},
            "run.$": "$.run",
            "steps.$": "$.steps"
        },
        "ResultPath": format!("$.steps.{}", step.key),
        "Retry": retry.into_iter().chain([lambda_timeout_retrier()]).collect::<Vec<_>>(),
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": catch_next}],
    });
    if let Some(next) = next {
        t["Next"] = json!(next);
    } else {
        t["End"] = json!(true);
    }
    t
}

/// `<Title> Start`, and for a long step `<Title> Wait` and `<Title> Status`; the last goes to `next`.
fn step_states(states: &mut Map<String, Value>, step: &StepDef, next: &str) {
    let start = format!("{} Start", step.title);
    let Some(minutes) = step.poll_minutes else {
        let comment = format!("{}: {}.", step.title, step.what);
        let retry = vec![lambda_retrier(), transient_retrier(), limit_retrier()];
        states.insert(
            step.title.into(),
            task(step, "start", &comment, retry, "Cleanup", Some(next)),
        );
        return;
    };
    let wait = format!("{} Wait", step.title);
    let status = format!("{} Status", step.title);
    let comment = format!(
        "Starts {}; the output's wait_seconds is the first wait (0 when already done).",
        step.what
    );
    let retry = vec![lambda_retrier(), transient_retrier(), limit_retrier()];
    states.insert(
        start.clone(),
        task(step, "start", &comment, retry, "Cleanup", Some(&wait)),
    );
    states.insert(
        wait.clone(),
        json!({
            "Type": "Wait",
            "Comment": "The first poll comes INTERVAL / (BACKOFF - 1) after start, so every later poll is at most \
                        (BACKOFF - 1) of the elapsed time after the result (ami_core::model::steps::polling).",
            "SecondsPath": format!("$.steps.{}.wait_seconds", step.key),
            "Next": status
        }),
    );
    let comment = format!(
        "Polls {}: AmiPipeline.NotReady until done, retried with back-off; enough attempts to outlast the longest \
         timeout validation accepts ({minutes} min), so the handler's AmiPipeline.Timeout (not retried) ends a \
         hung step. Throttling inside a poll is answered NotReady, so it costs a poll, not a retrier's budget.",
        step.what
    );
    let retry = vec![lambda_retrier_polling(), poll_retrier(minutes)];
    states.insert(status, task(step, "status", &comment, retry, "Cleanup", Some(next)));
}

/// The definition, as SAM deploys it (Task resources are `${...}` substitutions).
pub fn definition() -> Value {
    let mut s = Map::new();
    s.insert(
        "Init".into(),
        json!({"Type": "Pass", "Comment": "Execution input is {run}; every step's output is kept under $.steps.",
               "Parameters": {"run.$": "$.run", "steps": {}, "warnings": {}}, "Next": "Source?"}),
    );
    s.insert(
        "Source?".into(),
        json!({"Type": "Choice",
               "Comment": "A rerun that adopted an earlier attempt's tested image goes straight to copy; an image \
                           source is built first; an instance source is snapshotted as it is.",
               "Choices": [{"Variable": "$.run.adopted", "IsPresent": true, "Next": "Adopt"},
                           {"Variable": "$.run.build", "BooleanEquals": true, "Next": "Build Start"}],
               "Default": "Snapshot Start"}),
    );
    // A rerun adopts the image the trigger found kept (`run.adopted`, model::rerun) with one Pass state rather than
    // an "adopted" answer from each of build, snapshot, register and test: one branch in the definition instead of a
    // code path in four handlers, and the skipped steps never run (no calls, no transitions). Copy reads the tested
    // image from `$.steps.register`, so that is where the adopted one goes.
    s.insert(
        "Adopt".into(),
        json!({"Type": "Pass",
               "Comment": "Rerun: the tested image an earlier attempt kept stands in for build, snapshot, register and \
                           test; copy makes only the copies that are missing.",
               "InputPath": "$.run.adopted.image", "ResultPath": "$.steps.register", "Next": "Copy Start"}),
    );
    step_states(&mut s, &BUILD, "Snapshot Start");
    step_states(&mut s, &SNAPSHOT, "Register Start");
    step_states(&mut s, &REGISTER, "Builder Built?");
    s.insert(
        "Builder Built?".into(),
        json!({"Type": "Choice",
               "Comment": "A builder exists only for an image source; a source instance is never terminated.",
               "Choices": [{"Variable": "$.run.build", "BooleanEquals": true, "Next": "Build Finish"}],
               "Default": "Test Start"}),
    );
    s.insert(
        "Build Finish".into(),
        task(
            &BUILD,
            "finish",
            "Terminates the builder once the image is available: register reads its UEFI variable store, and \
             a CreateImage image is made from it. On a failure the Catch goes to Cleanup, which terminates it by \
             tag.",
            vec![lambda_retrier(), transient_retrier()],
            "Cleanup",
            Some("Test Start"),
        ),
    );
    step_states(&mut s, &TEST, "Test Finish");
    s.insert(
        "Test Finish".into(),
        task(
            &TEST,
            "finish",
            "Terminates the test instance after a pass. On a failure the Catch goes to Cleanup, which terminates \
             it by tag.",
            vec![lambda_retrier(), transient_retrier()],
            "Cleanup",
            Some("Copy Start"),
        ),
    );
    step_states(&mut s, &COPY, "Share");
    step_states(&mut s, &SHARE, "Publish");
    step_states(&mut s, &PUBLISH, "Retire");
    step_states(&mut s, &RETIRE, "Summary");
    // Nothing after publish fails a published release: the images are released and the pointers moved, so a
    // failed retire is recorded in the output and the run succeeds; the next run's retire covers the same images.
    s["Retire"]["Catch"] = json!([{"ErrorEquals": ["States.ALL"], "ResultPath": "$.warnings.retire",
                                   "Next": "Retire Warning"}]);
    // Retire's report (what it kept, deprecated and deleted in every region) is read by no later state: it stays in
    // the execution history (the Task's output), out of the state, whose size Step Functions caps (`payload`).
    s["Retire"]["ResultPath"] = Value::Null;
    s.insert(
        "Retire Warning".into(),
        json!({"Type": "Pass",
               "Comment": "Retire failed after publish: the release stands. The error stays in $.warnings.retire, \
                           and this notice makes the SUCCEEDED status-change event match the notification rule.",
               "Result": WARNING_NOTICE, "ResultPath": "$.warnings.notice", "Next": "Summary"}),
    );
    s.insert(
        "Summary".into(),
        json!({"Type": "Pass", "Comment": "The execution's output.",
               "Parameters": {"pipeline.$": "$.run.pipeline", "release.$": "$.run.release",
                              "source_image_id.$": "$.steps.copy.source_image_id",
                              "images.$": "$.steps.copy.images",
                              "boot_to_ready_seconds.$": "$.steps.copy.boot_to_ready_seconds",
                              "published.$": "$.steps.publish",
                              "warnings.$": "$.warnings"},
               "End": true}),
    );
    let mut cleanup = task(
        &CLEANUP,
        "start",
        &format!("{}: {}.", CLEANUP.title, CLEANUP.what),
        vec![lambda_retrier(), transient_retrier()],
        "Failed",
        Some("Failed"),
    );
    cleanup["Catch"][0]["ResultPath"] = json!("$.cleanup_error");
    // The same for cleanup's report: only the Fail state follows, which reads `$.error`.
    cleanup["ResultPath"] = Value::Null;
    s.insert("Cleanup".into(), cleanup);
    s.insert(
        "Failed".into(),
        json!({"Type": "Fail",
               "Comment": "Fails the execution with the original error name and cause (not the cleanup's).",
               "ErrorPath": "$.error.Error", "CausePath": "$.error.Cause"}),
    );
    json!({
        "Comment": "ami-pipeline: build, snapshot, register, test, copy to every region, share, publish, retire. \
                    Any failure up to publish runs Cleanup, then fails with the original error; a failed retire is a warning in \
                    the output. Generated by \
                    functions/core/src/definition.rs (`make definition`); Task resources are DefinitionSubstitutions \
                    (the SAM template; tests/local/runner.mjs locally).",
        "StartAt": "Init",
        "States": s
    })
}

/// The committed definition's text.
pub fn render() -> String {
    render_json(definition())
}

/// A generated file's text: the JSON with sorted keys, two-space indented, with a final newline.
pub fn render_json(v: Value) -> String {
    crate::model::json::pretty(v)
}

/// For the tests that keep a generated file current: rewrites `path` (relative to the repository) when the
/// variable `update` is set, then fails unless the committed text is `fresh`, naming the make target to run.
#[cfg(test)]
pub(crate) fn assert_committed(path: &str, fresh: &str, update: &str, target: &str) {
    let file = format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os(update).is_some() {
        std::fs::write(&file, fresh).expect("write the generated file");
    }
    let committed = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(committed == fresh, "{path} is stale: run `make {target}` and commit it");
}

#[cfg(test)]
mod payload;
#[cfg(test)]
mod tests;
