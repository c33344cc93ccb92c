//! Entry point of the log function.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    conveyor_gcp::service::main(conveyor_log::STEP, conveyor_log::ports).await
}
