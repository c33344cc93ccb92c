//! Entry point of the stage function.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    conveyor::service::run_function(conveyor_stage::STEP).await
}
