//! The events that start a pipeline: a release event and a scheduled refresh.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use serde::{Deserialize, Serialize};

use crate::model::error::{Error, Result};
use crate::model::input::parse_value;
use crate::model::naming;

pub const RELEASE_DETAIL_TYPE: &str = "Release Published";

/// `detail` of a release event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseDetail {
    pub pipeline: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    /// Publish even over a newer release: parameters and launch templates that point at a newer image are moved
    /// back to this one (a rollback). Without it publish never goes backwards.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// The input an EventBridge Scheduler schedule (or a scheduled rule with constant input) sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleInput {
    pub pipeline: String,
    /// `<aws.scheduler.scheduled-time>`, so retries of one schedule map to one day; default: now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_time: Option<String>,
}

/// The input of the stack's nightly schedule: refresh every stored recipe whose `refresh` asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshAllInput {
    pub refresh: RefreshScope,
    /// `<aws.scheduler.scheduled-time>`: every pipeline's run is keyed to this day; default: now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_time: Option<String>,
}

/// Which pipelines a refresh covers: `all` (a schedule for one pipeline names it instead: [`ScheduleInput`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefreshScope {
    All,
}

/// A refresh of every pipeline: the schedule's UTC day (`YYYYMMDD`) and time, as a one-pipeline schedule has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshAll {
    pub day: String,
    pub time: String,
}

/// How the nightly refresh paces its pipelines, and how many one run covers. Each pipeline's preflight makes one
/// RunInstances DryRun and its build one RunInstances a few seconds after the start (its test launch another, much
/// later); its copies call CopyImage, one per copy region, when the build and test are done. EC2's request token
/// buckets, per account and region, are RunInstances 5 tokens refilled 2 a second, and CopyImage 100 refilled 1 a
/// second ("Request throttling for the Amazon EC2 API",
/// https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html). One pipeline a second makes at most two
/// RunInstances calls a second (the DryRun, then the build's launch), the refill rate, so the refresh never drains
/// the bucket, and its copies, which follow the starts, come at about one a second in each region. A throttled call
/// is retried by the SDK and, in the state machine, by the step's retrier.
pub mod nightly {
    /// The least time between two pipelines' checks and starts.
    pub const START_INTERVAL_SECONDS: u64 = 1;
    /// Pipelines one run refreshes, in name order; later ones are refused with the fix (their own schedule).
    pub const MAX_PIPELINES: usize = 250;
    /// What the trigger's Timeout allows each pipeline (its checks and start are 15 to 20 AWS calls, some in other
    /// regions): the template's Timeout must be at least `MAX_PIPELINES` times this (tests/infra).
    pub const SECONDS_PER_PIPELINE: u64 = 3;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerEvent {
    /// `day` is the UTC day of the event's `time` (today when absent), so a redelivered event maps to the same
    /// execution input; `time` is that time, RFC 3339 UTC (publish orders releases by it).
    Release {
        detail: ReleaseDetail,
        day: String,
        time: String,
    },
    /// `day` is the UTC day of the schedule, `YYYYMMDD`; `time` the schedule's time (now when absent).
    Schedule {
        pipeline: String,
        day: String,
        time: String,
    },
}

impl TriggerEvent {
    pub fn pipeline(&self) -> &str {
        match self {
            TriggerEvent::Release { detail, .. } => &detail.pipeline,
            TriggerEvent::Schedule { pipeline, .. } => pipeline,
        }
    }
}

fn day_of(field: &str, rfc3339: &str) -> Result<(String, String)> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            let t = t.with_timezone(&chrono::Utc);
            (t.format("%Y%m%d").to_string(), rfc3339_utc(t))
        })
        .map_err(|_| Error::invalid(field, "must be an RFC 3339 time such as 2026-11-26T03:00:00Z"))
}

fn rfc3339_utc(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Today, UTC, `YYYYMMDD`.
pub fn today() -> String {
    chrono::Utc::now().format("%Y%m%d").to_string()
}

/// `Some` when the event asks to refresh every pipeline (it has `refresh`): its day and time, or what is wrong.
pub fn refresh_all(value: &serde_json::Value) -> Option<Result<RefreshAll>> {
    value.get("refresh")?;
    Some((|| {
        let input: RefreshAllInput = parse_value("event", value.clone())?;
        let (day, time) = schedule_day("event.scheduled_time", input.scheduled_time.as_deref())?;
        Ok(RefreshAll { day, time })
    })())
}

/// The UTC day and time of a schedule's `scheduled_time`, or of now when it has none.
fn schedule_day(field: &str, scheduled_time: Option<&str>) -> Result<(String, String)> {
    match scheduled_time {
        Some(t) => day_of(field, t),
        None => Ok((today(), rfc3339_utc(chrono::Utc::now()))),
    }
}

/// Reads a trigger event: an EventBridge envelope with detail-type `Release Published`, or a schedule input.
pub fn parse(value: serde_json::Value) -> Result<TriggerEvent> {
    let is_envelope = value.get("detail-type").is_some();
    if !value.is_object() {
        return Err(Error::invalid("event", "must be a JSON object"));
    }
    if is_envelope {
        let envelope: EventBridgeEvent<serde_json::Value> = parse_value("event", value)?;
        if envelope.detail_type != RELEASE_DETAIL_TYPE {
            return Err(Error::invalid(
                "event.detail-type",
                format!(
                    "must be `{RELEASE_DETAIL_TYPE}`, got `{}`",
                    naming::preview(&envelope.detail_type)
                ),
            ));
        }
        // serde would also read a struct from an array, positionally; a release is only ever an object.
        if !envelope.detail.is_object() {
            return Err(Error::invalid(
                "event.detail",
                "must be an object {pipeline, version, commit?, artifact?}",
            ));
        }
        let detail: ReleaseDetail = parse_value("event.detail", envelope.detail)?;
        naming::check_pipeline_name("event.detail.pipeline", &detail.pipeline)?;
        naming::check_version("event.detail.version", &detail.version)?;
        if let Some(c) = &detail.commit {
            naming::check_commit("event.detail.commit", c)?;
        }
        if let Some(a) = &detail.artifact {
            naming::check_artifact("event.detail.artifact", a)?;
        }
        let time = envelope.time.unwrap_or_else(chrono::Utc::now);
        Ok(TriggerEvent::Release {
            detail,
            day: time.format("%Y%m%d").to_string(),
            time: rfc3339_utc(time),
        })
    } else {
        let input: ScheduleInput = parse_value("event", value)?;
        naming::check_pipeline_name("event.pipeline", &input.pipeline)?;
        let (day, time) = schedule_day("event.scheduled_time", input.scheduled_time.as_deref())?;
        Ok(TriggerEvent::Schedule {
            pipeline: input.pipeline,
            day,
            time,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn release(detail: serde_json::Value) -> serde_json::Value {
        json!({"version": "0", "id": "6a7e8feb", "detail-type": "Release Published", "source": "com.example.ci",
               "account": "123456789012", "time": "2026-11-26T10:00:00Z", "region": "us-east-1",
               "resources": [], "detail": detail})
    }

    #[test]
    fn release_events_parse_and_validate() {
        let ev = parse(release(
            json!({"pipeline": "web", "version": "1.4.0", "commit": "0a1b2c3d"}),
        ))
        .unwrap();
        assert_eq!(ev.pipeline(), "web");
        let TriggerEvent::Release { detail, time, .. } = &ev else {
            panic!("{ev:?}")
        };
        assert_eq!((time.as_str(), detail.force), ("2026-11-26T10:00:00Z", false));
        let forced = parse(release(json!({"pipeline": "web", "version": "1.3.0", "force": true}))).unwrap();
        assert!(matches!(forced, TriggerEvent::Release { detail, .. } if detail.force));
        let err = parse(release(json!({"pipeline": "web", "version": "1", "force": "yes"}))).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { field, .. } if field.starts_with("event.detail")),
            "{err}"
        );
        let err = parse(release(json!({"pipeline": "web"}))).unwrap_err();
        assert!(err.to_string().contains("missing field `version`"), "{err}");
        let err = parse(release(json!({"pipeline": "web", "version": "1; reboot"}))).unwrap_err();
        assert!(matches!(&err, Error::InvalidInput { field, .. } if field == "event.detail.version"));
        let err = parse(release(json!({"pipeline": "web", "version": "1", "extra": 1}))).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { field, .. } if field == "event.detail.extra"),
            "{err}"
        );
    }

    #[test]
    fn schedules_map_to_their_day() {
        let ev = parse(json!({"pipeline": "web", "scheduled_time": "2026-11-26T23:30:00-02:00"})).unwrap();
        assert_eq!(
            ev,
            TriggerEvent::Schedule {
                pipeline: "web".into(),
                day: "20261127".into(),
                time: "2026-11-27T01:30:00Z".into(),
            }
        );
        assert!(parse(json!({"pipeline": "web", "scheduled_time": "yesterday"})).is_err());
        assert!(parse(json!([1])).is_err());
        let mut wrong = release(json!({}));
        wrong["detail-type"] = json!("Scheduled Event");
        let err = parse(wrong).unwrap_err();
        assert!(matches!(&err, Error::InvalidInput { field, .. } if field == "event.detail-type"));
    }

    #[test]
    fn a_refresh_of_every_pipeline_maps_to_its_day_and_names_no_pipeline() {
        let all = refresh_all(&json!({"refresh": "all", "scheduled_time": "2026-11-26T23:30:00-02:00"}));
        assert_eq!(
            all,
            Some(Ok(RefreshAll {
                day: "20261127".into(),
                time: "2026-11-27T01:30:00Z".into()
            }))
        );
        assert!(
            refresh_all(&json!({"pipeline": "web"})).is_none(),
            "a one-pipeline schedule"
        );
        for (bad, field) in [
            (json!({"refresh": "some"}), "event.refresh"),
            (json!({"refresh": "all", "pipeline": "web"}), "event.pipeline"),
            (
                json!({"refresh": "all", "scheduled_time": "tonight"}),
                "event.scheduled_time",
            ),
        ] {
            let err = refresh_all(&bad).unwrap().unwrap_err();
            assert!(
                matches!(&err, Error::InvalidInput { field: f, .. } if f == field),
                "{bad}: {err}"
            );
        }
    }
}
