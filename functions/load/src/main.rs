//! Entry point of the load function.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    conveyor::service::run_function(conveyor_load::STEP).await
}
