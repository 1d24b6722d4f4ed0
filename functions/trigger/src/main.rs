use ami_trigger::{Config, Deps, handle, preflight};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let deps = Deps::new(&ami_core::aws::clients::load_config().await, Config::from_env()?);
    ami_core::aws::runtime::serve(|event| async {
        // `{"preflight": true, "pipeline": ...}`: the checks alone, nothing started (`make preflight`).
        match preflight::requested(&event) {
            Some(pipeline) => preflight::run(&deps, &pipeline?).await,
            None => handle(&deps, event)
                .await
                .map(|out| serde_json::to_value(out).unwrap_or_default()),
        }
    })
    .await
}
