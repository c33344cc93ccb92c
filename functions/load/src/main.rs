//! Entry point of the load function.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    conveyor_gcp::service::main(conveyor_load::STEP, conveyor_load::ports).await
}
