use ami_core::step::{Clients, serve_step};
use ami_share::Deps;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    serve_step(|config| Deps(Clients::from_config(config))).await
}
