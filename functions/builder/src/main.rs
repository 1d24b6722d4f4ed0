use ami_build::Deps;
use ami_core::step::{InstanceClients, serve_step};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    serve_step(|config| Deps(InstanceClients::from_config(config))).await
}
