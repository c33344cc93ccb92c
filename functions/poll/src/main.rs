//! Entry point of the poll function.

fn main() -> std::process::ExitCode {
    conveyor_service::start(conveyor_poll::STEP, conveyor_poll::ports)
}
