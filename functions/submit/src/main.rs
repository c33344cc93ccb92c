//! Entry point of the submit function.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    conveyor::service::main(conveyor_submit::STEP).await
}
