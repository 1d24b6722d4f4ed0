use ami_register::Deps;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ami_core::step::serve_step(|config| Deps(aws_sdk_ec2::Client::new(config))).await
}
