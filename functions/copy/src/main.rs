use ami_copy::Deps;
use ami_core::step::{Clients, serve_step};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    serve_step(|config| Deps(Clients::from_config(config))).await
}
