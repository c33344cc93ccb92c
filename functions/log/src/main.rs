//! Entry point of the log function.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    conveyor::service::main(conveyor_log::STEP).await
}
