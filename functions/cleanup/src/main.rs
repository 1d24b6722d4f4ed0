use ami_cleanup::{Deps, handle};
use ami_core::step::Clients;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let deps = Deps(Clients::from_config(&ami_core::aws::clients::load_config().await));
    ami_core::aws::runtime::serve(|event| handle(&deps, event)).await
}
