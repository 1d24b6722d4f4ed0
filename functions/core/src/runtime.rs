//! The Lambda entry point every handler shares: JSON logs, a span with pipeline and execution, stable errors.

use std::future::Future;

use lambda_runtime::{LambdaEvent, service_fn, tracing};
use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;

use crate::error::Error;

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
        pipeline = %crate::naming::preview(pipeline),
        execution = %crate::naming::preview(text_at(payload, &["execution", "name"])),
        action = %crate::naming::preview(text_at(payload, &["action"])),
    )
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
        async move {
            // Boxed so each binary's top-level future stays shallow: the handlers' nested async state machines
            // otherwise overflow rustc's query depth when computing the layout of `main` (seen on clean builds).
            let result = Box::pin(handler(event.payload)).await;
            match &result {
                Ok(_) => tracing::info!("done"),
                Err(e) => tracing::error!(error_type = e.error_type(), error = %e, "failed"),
            }
            result
        }
        .instrument(span)
    }))
    .await
}
