//! The Lambda entry point every handler shares: JSON logs, a span with pipeline and execution, stable errors.

use std::future::Future;
use std::time::{Duration, SystemTime};

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn, tracing};
use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;

use crate::aws::clients::OPERATION_TIMEOUT;
use crate::model::error::Error;
use crate::model::naming::preview;

/// What Step Functions sees of a failed invocation: the error's stable `AmiPipeline.*` name and its message, cut to
/// [`MAX_ERROR_MESSAGE_BYTES`] (the message is the Catch's `Cause` in the execution's state, which Step Functions
/// caps at 256 KiB: `definition::payload`). The whole message is in the function's log.
impl From<Error> for Diagnostic {
    fn from(err: Error) -> Self {
        Diagnostic {
            error_type: err.error_type().to_string(),
            error_message: cut_message(&err.to_string(), MAX_ERROR_MESSAGE_BYTES),
        }
    }
}

/// The most bytes of a handler's error message, counted as a JSON string (escapes included).
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4096;

/// `message` cut so that, written as a JSON string, it takes at most `max` bytes, the cut marked.
pub fn cut_message(message: &str, max: usize) -> String {
    const MARK: &str = " ... (cut; the whole message is in the function's log)";
    let json_len = |c: char| match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    };
    if message.chars().map(json_len).sum::<usize>() + 2 <= max {
        return message.to_string();
    }
    let mut used = 2 + MARK.len();
    let mut out = String::new();
    for c in message.chars() {
        used += json_len(c);
        if used > max {
            break;
        }
        out.push(c);
    }
    out + MARK
}

/// Sets up `tracing`: JSON when the function's log format is JSON (`AWS_LAMBDA_LOG_FORMAT`), level from
/// `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG`.
pub fn init_logging() {
    tracing::init_default_subscriber();
}

fn text_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// A span that puts the pipeline, the execution and the action on every log line of one invocation.
pub fn span_for(payload: &Value) -> tracing::Span {
    let pipeline = [&["run", "pipeline"][..], &["detail", "pipeline"], &["pipeline"]]
        .iter()
        .map(|p| text_at(payload, p))
        .find(|s| !s.is_empty())
        .unwrap_or("");
    tracing::info_span!(
        "invocation",
        pipeline = %preview(pipeline),
        execution = %preview(text_at(payload, &["execution", "name"])),
        action = %preview(text_at(payload, &["action"])),
    )
}

/// The invocation being served: the Lambda `Context`'s request id and deadline.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    /// `None` when the runtime API sent no usable deadline: one already past when the invocation arrived (the
    /// local emulator, cargo lambda watch, sends the constant 600000 ms since the epoch).
    pub deadline: Option<SystemTime>,
}

tokio::task_local! {
    static INVOCATION: Invocation;
}

/// The invocation the current handler call serves (`None` outside `serve`, e.g. in unit tests).
pub fn invocation() -> Option<Invocation> {
    INVOCATION.try_with(Invocation::clone).ok()
}

/// Time a handler keeps in hand before starting the next region's calls: one SDK operation's timeout and a
/// margin.
pub const CALL_BUDGET: Duration = Duration::from_secs(OPERATION_TIMEOUT.as_secs() + 5);

/// Fails with `Transient` when less than `need` is left before the Lambda timeout, so a handler that works
/// through several regions stops between calls, and the Task's retry resumes it (every step is idempotent),
/// instead of being killed mid-call (`definition::LAMBDA_TIMEOUTS`, retried only twice). No limit outside `serve`.
pub fn ensure_time_left(need: Duration, what: &str) -> Result<(), Error> {
    let Some((inv, deadline)) = invocation().and_then(|i| i.deadline.map(|d| (i, d))) else {
        return Ok(());
    };
    let left = deadline.duration_since(SystemTime::now()).unwrap_or_default();
    if left < need {
        return Err(Error::Transient(format!(
            "{what}: {} ms left before the Lambda timeout (request {}); continuing on retry",
            left.as_millis(),
            inv.request_id
        )));
    }
    Ok(())
}

/// Runs `handler` under the Lambda runtime. Input is taken as raw JSON so the handler parses it and names the
/// bad field itself; errors reach Step Functions under their `AmiPipeline.*` name.
pub async fn serve<F, Fut, O>(handler: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(Value) -> Fut,
    Fut: Future<Output = Result<O, Error>>,
    O: Serialize,
{
    init_logging();
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let span = span_for(&event.payload);
        let invocation = Invocation {
            request_id: event.context.request_id.clone(),
            deadline: Some(event.context.deadline()).filter(|d| *d > SystemTime::now()),
        };
        async move {
            // Boxed so each binary's top-level future stays shallow: the handlers' nested async state machines
            // otherwise overflow rustc's query depth when computing the layout of `main` (seen on clean builds).
            let result = INVOCATION.scope(invocation, Box::pin(handler(event.payload))).await;
            match &result {
                Ok(_) => tracing::info!("done"),
                // A poll of a step still running: the normal answer, not a failure worth an error line.
                Err(e @ Error::NotReady(_)) => tracing::info!(error_type = e.error_type(), "not ready"),
                Err(e) => tracing::error!(error_type = e.error_type(), error = %e, "failed"),
            }
            result
        }
        .instrument(span)
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_cut_to_their_size_as_json() {
        let short = "a \"quoted\" message";
        assert_eq!(cut_message(short, 100), short);
        let long = "\"\u{1}x\u{e9}".repeat(2000);
        let cut = cut_message(&long, MAX_ERROR_MESSAGE_BYTES);
        let json = serde_json::to_string(&cut).unwrap();
        assert!(
            json.len() <= MAX_ERROR_MESSAGE_BYTES && json.len() > MAX_ERROR_MESSAGE_BYTES - 8,
            "{}",
            json.len()
        );
        assert!(cut.ends_with("in the function's log)"), "{cut}");
        let d = Diagnostic::from(Error::Internal("y".repeat(10_000)));
        assert!(serde_json::to_string(&d.error_message).unwrap().len() <= MAX_ERROR_MESSAGE_BYTES);
        assert_eq!(d.error_type, "AmiPipeline.Internal");
    }

    /// Moved from `model::error`'s `names_are_stable_and_listed` with the conversion.
    #[test]
    fn errors_reach_step_functions_under_their_stable_name() {
        let d: Diagnostic = Error::invalid("recipe.name", "must not be empty").into();
        assert_eq!(d.error_type, "AmiPipeline.InvalidInput");
        assert!(d.error_message.contains("recipe.name"));
    }
}

#[cfg(test)]
mod time_tests {
    use super::*;

    fn inv(left: Duration) -> Invocation {
        Invocation {
            request_id: "req-1".into(),
            deadline: Some(SystemTime::now() + left),
        }
    }

    #[tokio::test]
    async fn a_handler_stops_before_the_lambda_timeout() {
        assert!(
            ensure_time_left(Duration::from_secs(30), "x").is_ok(),
            "no limit outside serve"
        );
        let short = INVOCATION.scope(inv(Duration::from_secs(5)), async {
            ensure_time_left(Duration::from_secs(30), "sharing in eu-west-1")
        });
        let err = short.await.unwrap_err();
        assert_eq!(err.error_type(), "AmiPipeline.Transient");
        assert!(err.to_string().contains("req-1"), "{err}");
        let long = INVOCATION.scope(inv(Duration::from_secs(300)), async {
            (
                invocation().map(|i| i.request_id),
                ensure_time_left(Duration::from_secs(30), "x"),
            )
        });
        assert_eq!(long.await, (Some("req-1".to_string()), Ok(())));
        let unknown = Invocation {
            deadline: None,
            ..inv(Duration::ZERO)
        };
        let no_deadline = INVOCATION.scope(unknown, async { ensure_time_left(Duration::from_secs(30), "x") });
        assert_eq!(no_deadline.await, Ok(()), "no usable deadline: no limit");
    }
}
