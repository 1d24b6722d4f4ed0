use ami_trigger::{Config, Deps, handle};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let deps = Deps::new(&ami_core::clients::load_config().await, Config::from_env()?);
    ami_core::runtime::serve(|event| handle(&deps, event)).await
}
