//! Entry point of the log function.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    conveyor::service::run_function(conveyor_log::STEP).await
}
