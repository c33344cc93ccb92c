//! Entry point of the submit function.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    conveyor_gcp::service::main(conveyor_submit::STEP, conveyor_submit::ports).await
}
