//! Entry point of the console service.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match conveyor_console_service::run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "the console cannot start");
            eprintln!("conveyor-console: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
