//! Entry point of the poll function.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    conveyor::service::run_function(conveyor_poll::STEP).await
}
