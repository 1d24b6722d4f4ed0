use ami_publish::Deps;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ami_core::step::serve_step(Deps::from_config).await
}
