use ami_core::step::{InstanceClients, serve_step};
use ami_test_launch::Deps;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    serve_step(|config| Deps(InstanceClients::from_config(config))).await
}
