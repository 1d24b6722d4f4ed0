//! The step contract: what every pipeline step handler implements, and the one entry point that serves it.
//!
//! A step answers the state machine's three actions. `start` begins the work (idempotently: a retried start
//! adopts what the first one made); `status` looks at the world and answers ready, or fails with
//! `AmiPipeline.NotReady` so the status Task's Retry polls again (see [`crate::model::steps::settle`]); `finish` tidies up
//! after success. An action a step does not take is rejected by default with an `InvalidInput` that names it.
//! Every action gets the time (`now`, Unix seconds) from [`handle`], so tests fix it with [`handle_at`].

use std::future::Future;

use serde::Serialize;
use serde_json::Value;

use crate::aws::clients::{Ec2Clients, SdkConfig, SsmClients};
use crate::aws::error::{Error, Result};
use crate::definition::StepDef;
use crate::model::steps::{Action, Progress, StepRequest, now, settle};

/// The clients of the steps that launch an instance in the run's region, where they run, and talk to it (build,
/// test-launch): EC2, and SSM Run Command with its CloudWatch Logs output (its SSM client serves the other SSM
/// calls too).
#[derive(Clone)]
pub struct InstanceClients {
    pub ec2: aws_sdk_ec2::Client,
    pub channel: crate::aws::runcommand::Channel,
}

impl InstanceClients {
    pub fn from_config(config: &SdkConfig) -> Self {
        InstanceClients {
            ec2: aws_sdk_ec2::Client::new(config),
            channel: crate::aws::runcommand::Channel::from_config(config),
        }
    }
}

/// The clients most steps need, built once per process: EC2 and SSM per region, made on first use (a step that
/// works in the run's region alone asks for `req.run.region`, where the function runs).
#[derive(Clone)]
pub struct Clients {
    pub ec2: Ec2Clients,
    pub ssm: SsmClients,
}

impl Clients {
    pub fn from_config(config: &SdkConfig) -> Self {
        Clients {
            ec2: Ec2Clients::from_config(config),
            ssm: SsmClients::from_config(config),
        }
    }
}

pub trait Step {
    /// What every action of this step answers, kept by the state machine under `$.steps.<step>`.
    type Output: Serialize;

    /// The step in the definition's table: its name in messages ("copy takes `start` or `status`") and the actions
    /// the state machine sends it.
    const DEF: &'static StepDef;

    fn start(&self, _req: &StepRequest, _now: i64) -> impl Future<Output = Result<Self::Output>> {
        async { Err(rejected::<Self>()) }
    }

    fn status(&self, _req: &StepRequest, _now: i64) -> impl Future<Output = Result<Self::Output>> {
        async { Err(rejected::<Self>()) }
    }

    fn finish(&self, _req: &StepRequest, _now: i64) -> impl Future<Output = Result<Self::Output>> {
        async { Err(rejected::<Self>()) }
    }

    /// The progress a status answer carries: pending becomes `NotReady`. Steps without `status` keep the default.
    fn progress(_out: &Self::Output) -> Option<&Progress> {
        None
    }
}

/// What a step answers to an action it does not take: "copy takes `start` or `status`".
pub fn takes<S: Step + ?Sized>() -> String {
    let actions: Vec<String> = S::DEF.actions().iter().map(|a| format!("`{a}`")).collect();
    let list = match actions.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    format!("{} takes {list}", S::DEF.name())
}

fn rejected<S: Step + ?Sized>() -> Error {
    Error::invalid("input.action", takes::<S>())
}

/// Parses a step input (naming the bad field) and runs the action it asks for, now.
pub async fn handle<S: Step>(step: &S, event: Value) -> Result<S::Output> {
    handle_at(step, event, now()).await
}

/// [`handle`] at the time `now` (Unix seconds).
pub async fn handle_at<S: Step>(step: &S, event: Value, now: i64) -> Result<S::Output> {
    let req = StepRequest::parse(event)?;
    if !S::DEF.actions().contains(&req.action.as_str()) {
        // The definition never sends it: refused even where the step has code for it.
        return Err(rejected::<S>());
    }
    match req.action {
        Action::Start => step.start(&req, now).await,
        Action::Status => {
            let what = format!("{} status", S::DEF.name());
            settle(step.status(&req, now).await, |out| S::progress(out), &what)
        }
        Action::Finish => step.finish(&req, now).await,
    }
}

/// The `main` of every step function: loads the SDK configuration, makes the step from it (`make`) and serves it
/// under the Lambda runtime (`crate::aws::runtime::serve`).
pub async fn serve_step<S: Step>(make: impl FnOnce(&SdkConfig) -> S) -> std::result::Result<(), lambda_runtime::Error> {
    let step = make(&crate::aws::clients::load_config().await);
    crate::aws::runtime::serve(|event| handle(&step, event)).await
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::steps::Status;

    /// A long step with only `status` written: `start` falls to the default rejection.
    struct Poll(Status);

    impl Step for Poll {
        type Output = Progress;
        const DEF: &'static StepDef = &crate::definition::COPY;

        async fn status(&self, _req: &StepRequest, _now: i64) -> Result<Progress> {
            Ok(Progress::start(0, 5).with_status(self.0))
        }

        fn progress(out: &Progress) -> Option<&Progress> {
            Some(out)
        }
    }

    /// A one-shot step that also has `status` code, which the definition never sends it.
    struct OneShot;

    impl Step for OneShot {
        type Output = Progress;
        const DEF: &'static StepDef = &crate::definition::SHARE;

        async fn status(&self, _req: &StepRequest, _now: i64) -> Result<Progress> {
            Ok(Progress::start(0, 5))
        }
    }

    fn event(action: &str) -> Value {
        crate::testing::request(action, &crate::testing::run(), json!({}))
    }

    #[tokio::test]
    async fn actions_a_step_does_not_take_are_rejected_by_name() {
        for action in ["start", "finish"] {
            let err = handle(&Poll(Status::Ready), event(action)).await.unwrap_err();
            assert!(
                matches!(&err, Error::InvalidInput { field, message } if field == "input.action"
                    && message == "copy takes `start` or `status`"),
                "{action}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn an_action_the_definition_does_not_send_is_refused_even_with_code_for_it() {
        let err = handle(&OneShot, event("status")).await.unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { field, message } if field == "input.action"
                && message == "share takes `start`"),
            "{err}"
        );
    }

    #[test]
    fn names_and_actions_come_from_the_definition() {
        struct Build;
        impl Step for Build {
            type Output = Progress;
            const DEF: &'static StepDef = &crate::definition::BUILD;
        }
        assert_eq!(takes::<Build>(), "build takes `start`, `status` or `finish`");
        assert_eq!(takes::<OneShot>(), "share takes `start`");
        assert_eq!(crate::definition::TEST.name(), "test-launch");
    }

    #[tokio::test]
    async fn status_is_ready_or_not_ready() {
        assert!(handle(&Poll(Status::Ready), event("status")).await.is_ok());
        let err = handle(&Poll(Status::Pending), event("status")).await.unwrap_err();
        assert_eq!(err.error_type(), "AmiPipeline.NotReady");
        let err = handle(&Poll(Status::Ready), json!({"action": "status"}))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), "AmiPipeline.InvalidInput");
    }
}
