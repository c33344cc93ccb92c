//! Entry point of the submit function.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    conveyor::service::run_function(conveyor_submit::STEP).await
}
