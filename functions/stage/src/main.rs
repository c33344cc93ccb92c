//! Entry point of the stage function.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    conveyor_gcp::service::main(conveyor_stage::STEP, conveyor_stage::ports).await
}
