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

    /// The step's name, as in messages ("copy takes `start` or `status`").
    const NAME: &'static str;
    /// The actions it takes, for the rejection message.
    const ACTIONS: &'static str;

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

fn rejected<S: Step + ?Sized>() -> Error {
    Error::invalid("input.action", format!("{} takes {}", S::NAME, S::ACTIONS))
}

/// Parses a step input (naming the bad field) and runs the action it asks for, now.
pub async fn handle<S: Step>(step: &S, event: Value) -> Result<S::Output> {
    handle_at(step, event, now()).await
}

/// [`handle`] at the time `now` (Unix seconds).
pub async fn handle_at<S: Step>(step: &S, event: Value, now: i64) -> Result<S::Output> {
    let req = StepRequest::parse(event)?;
    match req.action {
        Action::Start => step.start(&req, now).await,
        Action::Status => {
            let what = format!("{} status", S::NAME);
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

    struct Poll(Status);

    impl Step for Poll {
        type Output = Progress;
        const NAME: &'static str = "poll";
        const ACTIONS: &'static str = "`status`";

        async fn status(&self, _req: &StepRequest, _now: i64) -> Result<Progress> {
            Ok(Progress::start(0, 5).with_status(self.0))
        }

        fn progress(out: &Progress) -> Option<&Progress> {
            Some(out)
        }
    }

    fn event(action: &str) -> Value {
        crate::testing::request(action, &crate::testing::run(), json!({}))
    }

    #[tokio::test]
    async fn actions_a_step_does_not_take_are_rejected_by_name() {
        let err = handle(&Poll(Status::Ready), event("start")).await.unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { field, message } if field == "input.action"
                && message == "poll takes `status`"),
            "{err}"
        );
        assert!(handle(&Poll(Status::Ready), event("finish")).await.is_err());
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
