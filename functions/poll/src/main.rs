//! Entry point of the poll function.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    conveyor_gcp::service::main(conveyor_poll::STEP, conveyor_poll::ports).await
}
