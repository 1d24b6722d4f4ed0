//! nightly: the stack's one schedule (`{"refresh": "all", "scheduled_time": ...}`) refreshes every recipe stored
//! under `RECIPE_PREFIX` whose `refresh` asks for it, each exactly as a schedule naming it would
//! ([`crate::scheduled`]: the day's execution name `<pipeline>-s-<day>`, the `when-source-changes` skip, reruns of
//! a failed day).
//!
//! - One recipe never stops the others: a recipe that does not parse, fails its preflight or cannot start is listed
//!   under `refused` with its error, and the next one is refreshed.
//! - Paced: consecutive pipelines start at least [`nightly::START_INTERVAL_SECONDS`] apart (why: that module's
//!   doc), at most [`nightly::MAX_PIPELINES`] a run, in name order; the ones after that are refused with the fix.
//! - An error a retry may cure (throttling, a 5xx, too little time left before the Lambda timeout) is listed too,
//!   and then fails the invocation, so Lambda's retry runs the refresh again: the day's execution names make the
//!   pipelines already started duplicates, and the rest are refreshed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ami_core::aws::error::{Error, Result};
use ami_core::aws::runtime::{CALL_BUDGET, ensure_time_left};
use ami_core::model::event::{RefreshAll, nightly};
use ami_core::model::naming;
use ami_core::model::recipe::Refresh;
use ami_core::model::steps::{RefreshOutput, Refused, TriggerStatus};
use lambda_runtime::tracing;

use super::{Deps, parse_stored, scheduled};

/// The time the refresh paces by. Production: tokio's clock; tests: one that records each wait and returns at once.
pub trait Clock: Send + Sync {
    /// The time since a fixed point of this clock.
    fn now(&self) -> Duration;
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// tokio's monotonic clock.
pub struct TokioClock(tokio::time::Instant);

impl Clock for TokioClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// How a refresh paces its pipelines and how many it takes ([`nightly`]'s numbers in production).
#[derive(Clone)]
pub struct Pacing {
    pub clock: Arc<dyn Clock>,
    pub interval: Duration,
    pub max_pipelines: usize,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            clock: Arc::new(TokioClock(tokio::time::Instant::now())),
            interval: Duration::from_secs(nightly::START_INTERVAL_SECONDS),
            max_pipelines: nightly::MAX_PIPELINES,
        }
    }
}

/// A recipe as stored: the pipeline it is stored for (its parameter's last part), the parameter, and its text.
struct Stored {
    pipeline: String,
    parameter: String,
    text: String,
}

/// Refreshes every stored recipe for the day of `all`; see the module doc.
pub async fn run(deps: &Deps, all: &RefreshAll) -> Result<RefreshOutput> {
    let stored = list(deps).await?;
    let pacing = &deps.nightly;
    let mut out = Outcome {
        out: RefreshOutput {
            day: all.day.clone(),
            ..RefreshOutput::default()
        },
        retry: Vec::new(),
    };
    let mut paced = 0;
    let mut last_start: Option<Duration> = None;
    for Stored {
        pipeline,
        parameter,
        text,
    } in stored
    {
        // a parameter named unlike a pipeline is no recipe the trigger can run: the field is the parameter
        let recipe = naming::check_pipeline_name(&parameter, &pipeline).and_then(|()| parse_stored(&pipeline, &text));
        let recipe = match recipe {
            Ok(r) => r,
            Err(e) => {
                out.refuse(pipeline, e);
                continue;
            }
        };
        if recipe.refresh == Refresh::Never {
            out.out.opted_out.push(pipeline);
            continue;
        }
        if paced == pacing.max_pipelines {
            let e = Error::invalid(
                "event.refresh",
                format!(
                    "the nightly refresh takes at most {} pipelines a run, in name order (one every {} s must fit \
                     the trigger's timeout), and `{pipeline}` comes later: give it a schedule of its own (input \
                     {{\"pipeline\": \"{pipeline}\", \"scheduled_time\": \"<aws.scheduler.scheduled-time>\"}})",
                    pacing.max_pipelines,
                    pacing.interval.as_secs_f64()
                ),
            );
            out.refuse(pipeline, e);
            continue;
        }
        if let Err(e) = ensure_time_left(CALL_BUDGET, &format!("nightly refresh of `{pipeline}`")) {
            out.refuse(pipeline, e);
            continue;
        }
        // The pace is kept between the starts of consecutive refreshes, so a slow one is not followed by a burst.
        if let Some(last) = last_start {
            let next = last + pacing.interval;
            let now = pacing.clock.now();
            if next > now {
                pacing.clock.sleep(next - now).await;
            }
        }
        last_start = Some(pacing.clock.now());
        paced += 1;
        match scheduled(deps, recipe, &all.day, &all.time).await {
            Ok(o) => {
                let reason = o.reason.as_deref().unwrap_or_default();
                tracing::info!(pipeline = %pipeline, status = ?o.status, reason, "refreshed");
                let list = match o.status {
                    TriggerStatus::Started | TriggerStatus::Rerun => &mut out.out.started,
                    TriggerStatus::Skipped => &mut out.out.unchanged,
                    TriggerStatus::Duplicate => &mut out.out.duplicate,
                };
                list.push(o);
            }
            Err(e) => out.refuse(pipeline, e),
        }
    }
    let Outcome { out, retry } = out;
    tracing::info!(
        day = %out.day,
        started = out.started.len(),
        unchanged = out.unchanged.len(),
        duplicate = out.duplicate.len(),
        opted_out = out.opted_out.len(),
        refused = out.refused.len(),
        "nightly refresh"
    );
    if !retry.is_empty() {
        return Err(Error::Transient(format!(
            "nightly refresh of {}: {} pipelines may succeed on a retry ({}); started {}, unchanged {}, duplicate {}, \
             refused for good {}",
            out.day,
            retry.len(),
            retry.join("; "),
            out.started.len(),
            out.unchanged.len(),
            out.duplicate.len(),
            out.refused.len() - retry.len()
        )));
    }
    Ok(out)
}

/// The refresh's output so far, and the refusals a retry may cure (`pipeline: error`).
struct Outcome {
    out: RefreshOutput,
    retry: Vec<String>,
}

impl Outcome {
    fn refuse(&mut self, pipeline: String, e: Error) {
        tracing::error!(pipeline = %pipeline, error_type = e.error_type(), "not refreshed: {e}");
        if e.is_retryable() {
            self.retry.push(format!("{pipeline}: {e}"));
        }
        self.out.refused.push(Refused {
            pipeline,
            error: e.error_type().to_string(),
            reason: e.to_string(),
        });
    }
}

/// Every recipe stored directly under the prefix (not deeper: a pipeline is `<prefix>/<pipeline>`), by name.
async fn list(deps: &Deps) -> Result<Vec<Stored>> {
    let prefix = &deps.config.recipe_prefix;
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = deps
            .ssm
            .get_parameters_by_path()
            .path(prefix)
            .recursive(false)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| ami_core::aws::error::from_sdk("GetParametersByPath", e))?;
        for p in page.parameters() {
            let (name, text) = (p.name().unwrap_or_default(), p.value().unwrap_or_default());
            if let Some(pipeline) = name.strip_prefix(prefix.as_str()).and_then(|n| n.strip_prefix('/')) {
                out.push(Stored {
                    pipeline: pipeline.to_string(),
                    parameter: name.to_string(),
                    text: text.to_string(),
                });
            }
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    out.sort_by(|a, b| a.parameter.cmp(&b.parameter));
    Ok(out)
}
