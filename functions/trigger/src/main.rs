use ami_trigger::{Config, Deps, respond};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let deps = Deps::new(&ami_core::aws::clients::load_config().await, Config::from_env()?);
    ami_core::aws::runtime::serve(|event| respond(&deps, event)).await
}
