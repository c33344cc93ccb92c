//! Entry point of the poll function.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    conveyor::service::main(conveyor_poll::STEP).await
}
