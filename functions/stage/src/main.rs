//! Entry point of the stage function.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    conveyor::service::main(conveyor_stage::STEP).await
}
