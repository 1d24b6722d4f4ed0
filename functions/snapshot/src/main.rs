use ami_snapshot::Deps;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let deps = Deps::from_config(&ami_core::clients::load_config().await);
    ami_core::step::serve_step(deps).await
}
