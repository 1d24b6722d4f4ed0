//! Warm-latency control (bench/WARM_LATENCY.md): nothing but lambda_runtime's loop (the workspace's version and
//! features), no AWS call, no config. Answers every event with `{"ok": true}`, or, with CONTROL_FAIL=1, fails it
//! (lambda_runtime posts to `/error`, as our handlers do for a rejected input).
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let fail = std::env::var("CONTROL_FAIL").is_ok_and(|v| v == "1");
    lambda_runtime::run(service_fn(move |_: LambdaEvent<Value>| async move {
        if fail {
            return Err(Error::from("rejected input (control)"));
        }
        Ok::<_, Error>(json!({"ok": true}))
    }))
    .await
}
