//! Entry point of the load function.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    conveyor::service::main(conveyor_load::STEP).await
}
